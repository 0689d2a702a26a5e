package resources

// LabelsMatch says whether a node's labels hold every entry of a selector
// (ray.NodeLabels): the same key with the same value.
func LabelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
