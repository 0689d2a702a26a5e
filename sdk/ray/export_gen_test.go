package ray

// GeneratorStats says how many items the owner registered, how many the
// consumer took, and how many reports backpressure holds.
func GeneratorStats[R any](g *ObjectRefGenerator[R]) (reported, taken, held int) { return g.g.Stats() }
