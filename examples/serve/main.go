// Command serve runs a two-deployment Serve application on an embedded
// cluster: "front" parses ?text= from HTTP requests and asks "sentiment"
// (2 replicas, typed calls through a handle, no HTTP between them) for a
// score; it then sends requests through the node's proxy, checks the
// answers, and prints the status.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/manta-ray/manta/sdk/ray"
	"github.com/manta-ray/manta/sdk/serve"
)

// Text and Score are the sentiment model's request and answer.
type Text struct{ S string }
type Score struct{ Positive, Negative int }

type sentiment struct{ good, bad map[string]bool }

var Sentiment = serve.Typed("examples.sentiment",
	func(_ context.Context, words [2][]string) (*sentiment, error) {
		m := &sentiment{good: map[string]bool{}, bad: map[string]bool{}}
		for _, w := range words[0] {
			m.good[w] = true
		}
		for _, w := range words[1] {
			m.bad[w] = true
		}
		return m, nil
	},
	func(m *sentiment, _ context.Context, t Text) (Score, error) {
		var s Score
		for _, w := range strings.Fields(strings.ToLower(t.S)) {
			if m.good[w] {
				s.Positive++
			}
			if m.bad[w] {
				s.Negative++
			}
		}
		return s, nil
	}, serve.NumReplicas(2))

// FrontArg is front's constructor argument: a handle to the model.
type FrontArg struct{ Model serve.Handle[Text, Score] }

type front struct{ model serve.Handle[Text, Score] }

var Front = serve.HTTP("examples.front",
	func(_ context.Context, a FrontArg) (*front, error) { return &front{model: a.Model}, nil },
	func(f *front, ctx context.Context, r *http.Request) (serve.Response, error) {
		text := r.URL.Query().Get("text")
		if text == "" {
			return serve.Response{}, serve.Errorf(http.StatusBadRequest, "?text= is required")
		}
		s, err := f.model.Call(ctx, Text{S: text})
		if err != nil {
			return serve.Response{}, err
		}
		return serve.JSON(s), nil
	}, serve.MaxOngoingRequests(16))

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx); err != nil {
			return err
		}
		model := Sentiment.Bind([2][]string{{"good", "great", "fine"}, {"bad", "awful"}})
		app := Front.Bind(FrontArg{Model: serve.HandleOf[Text, Score](model)})
		if err := serve.Run(ctx, app, serve.Name("sentiment"), serve.Route("/sentiment"), serve.HTTPPort(0)); err != nil {
			return err
		}
		st, err := serve.Status(ctx)
		if err != nil {
			return err
		}
		base := "http://" + st.Proxies[0].Address
		for text, want := range map[string]string{
			"a good day, not a bad one": `{"Positive":1,"Negative":1}`,
			"great fine good":           `{"Positive":3,"Negative":0}`,
		} {
			resp, err := http.Get(base + "/sentiment?text=" + strings.ReplaceAll(text, " ", "+"))
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != want {
				return fmt.Errorf("%q: %d %s, want %s", text, resp.StatusCode, b, want)
			}
			fmt.Printf("%-28q -> %s\n", text, b)
		}
		for _, a := range st.Apps {
			for _, d := range a.Deployments {
				fmt.Printf("%s/%s: %s, %d/%d replicas running\n", a.Name, d.Name, d.Status, d.Running, d.Target)
			}
		}
		return serve.Delete(ctx, "sentiment")
	})
}
