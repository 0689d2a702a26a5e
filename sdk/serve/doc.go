// Package serve is manta's Ray Serve: Go handlers deployed as replicated
// actors behind an HTTP proxy on every node.
//
// A deployment is an actor class with a handler, registered at init time
// (so the job's binary, re-executed as worker processes, knows it too):
//
//	var Model = serve.Typed("model", newModel, (*model).Predict, serve.NumReplicas(2))
//	var Front = serve.HTTP("front", newFront, (*front).ServeHTTP, serve.MaxOngoingRequests(16))
//
//	app := Front.Bind(serve.HandleOf[Vec, Label](Model.Bind(cfg)))
//	err := serve.Run(ctx, app, serve.Route("/classify"))
//
// Front's constructor receives a Handle[Vec, Label]: its calls go straight
// to a replica of Model (an actor call), not through HTTP.
//
// The control plane's leader runs the controller: the application is its
// desired state in the Raft store; it starts replica actors, checks their
// health (a CheckHealth(ctx) error method of the instance when it has
// one), replaces unhealthy or dead ones, rolls a new version out (new
// replicas running before old ones drain) and scales autoscaled
// deployments by their ongoing requests. A proxy actor on every node
// serves HTTP (port 8000 unless HTTPPort says otherwise), routes by the
// longest route prefix, picks a replica by power of two choices on the
// requests it has in flight, skips replicas at MaxOngoingRequests, queues
// up to MaxQueuedRequests and then answers 503 with Retry-After. A request
// that ends (client gone, RequestTimeout) cancels its replica call.
package serve
