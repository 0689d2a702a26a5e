package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/state"
)

func init() { extraCommands = append(extraCommands, newGetCommand, newSummaryCommand) }

// newListCommand is `manta list KIND`: the State API's listings.
func newListCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list tasks|actors|objects|nodes|jobs|workers|placement-groups",
		Short: "List the cluster's tasks, actors, objects, nodes, jobs, workers or placement groups",
		Long: `List one kind of the cluster's state, as Ray's "ray list" does.

Filters are key=value or key!=value on the listing's columns (string values
ignore case); an unknown column or a value of the wrong type is refused.
At most --limit rows are shown (default 100, capped at 10000); tasks are
paged: the next page's token is printed when there is one.`,
		Args: usageArgs(cobra.ExactArgs(1)),
	}
	cf := addClusterFlags(cmd)
	var filters []string
	var limit int
	var detail, asJSON bool
	var format, page string
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "key=value or key!=value (repeatable)")
	cmd.Flags().IntVar(&limit, "limit", state.DefaultLimit, fmt.Sprintf("at most this many rows (max %d)", state.MaxLimit))
	cmd.Flags().BoolVar(&detail, "detail", false, "all columns")
	cmd.Flags().StringVar(&format, "format", "table", "table, json or yaml")
	cmd.Flags().BoolVar(&asJSON, "json", false, "same as --format json")
	cmd.Flags().StringVar(&page, "page-token", "", "continue a task listing")
	var job string
	cmd.Flags().StringVar(&job, "job", "", "same as --filter job_id=ID")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if asJSON {
			format = "json"
		}
		if err := checkFormat(format); err != nil {
			return err
		}
		opts := []state.Option{state.WithLimit(limit), state.WithDetail(detail), state.WithPageToken(page)}
		for _, f := range filters {
			opts = append(opts, state.WithFilter(f))
		}
		if job != "" {
			opts = append(opts, state.WithFilter("job_id="+job))
		}
		return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
			l, err := state.ListKind(ctx, cl, args[0], opts...)
			if err != nil {
				return err
			}
			return printList(cmd, l, format, detail)
		})
	}
	return cmd
}

func checkFormat(f string) error {
	switch f {
	case "table", "json", "yaml":
		return nil
	}
	return usageError{fmt.Errorf("--format %q: want table, json or yaml", f)}
}

func printList(cmd *cobra.Command, l *state.List, format string, detail bool) error {
	out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
	for _, w := range l.Warnings {
		fmt.Fprintf(errw, "warning: %s\n", w)
	}
	if l.NumFiltered > len(l.Rows) {
		fmt.Fprintf(errw, "showing %d of %d (limit %d; use --filter, --limit or --page-token)\n", len(l.Rows), l.NumFiltered, l.Limit)
	}
	if l.NextPageToken != "" {
		fmt.Fprintf(errw, "next page: --page-token %s\n", l.NextPageToken)
	}
	rows := l.Rows
	if rows == nil {
		rows = []state.Row{}
	}
	switch format {
	case "json":
		return writeStateJSON(out, rows)
	case "yaml":
		return yaml.NewEncoder(out).Encode(rows)
	}
	cols := state.Columns(l.Kind)
	if detail {
		cols = allColumns(rows)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(cols, "\t")))
	for _, r := range rows {
		vals := make([]string, len(cols))
		for i, c := range cols {
			vals[i] = cell(r[c])
		}
		fmt.Fprintln(tw, strings.Join(vals, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%d of %d shown\n", len(rows), l.NumFiltered)
	return nil
}

func allColumns(rows []state.Row) []string {
	seen := map[string]bool{}
	var cols []string
	for _, r := range rows {
		for k := range r {
			if !seen[k] {
				seen[k] = true
				cols = append(cols, k)
			}
		}
	}
	sort.Strings(cols)
	return cols
}

func writeStateJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// cell renders a value in one table cell.
func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return strings.ReplaceAll(x, "\n", " ")
	case map[string]float64:
		return joinMap(x)
	case map[string]string:
		return joinMap(x)
	case map[string]uint64:
		return joinMap(x)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func joinMap[V any](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %v", k, m[k])
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// newGetCommand is `manta get KIND ID`.
func newGetCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get task|actor|object|node|worker ID",
		Short: "Show one task (every attempt), actor, object, node or worker in full",
		Args:  usageArgs(cobra.ExactArgs(2)),
	}
	cf := addClusterFlags(cmd)
	var format string
	cmd.Flags().StringVar(&format, "format", "yaml", "yaml or json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkFormat(format); err != nil {
			return err
		}
		return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
			rows, err := state.Get(ctx, cl, args[0], args[1])
			if err != nil {
				return err
			}
			if format == "json" {
				return writeStateJSON(cmd.OutOrStdout(), rows)
			}
			return yaml.NewEncoder(cmd.OutOrStdout()).Encode(rows)
		})
	}
	return cmd
}

// newSummaryCommand is `manta summary tasks|actors|objects`.
func newSummaryCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "summary tasks|actors|objects",
		Short: "Count tasks by function and state, actors by class and state, or objects and their bytes",
		Args:  usageArgs(cobra.ExactArgs(1)),
	}
	cf := addClusterFlags(cmd)
	var filters []string
	var format string
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "key=value or key!=value (repeatable)")
	cmd.Flags().StringVar(&format, "format", "table", "table, json or yaml")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkFormat(format); err != nil {
			return err
		}
		var opts []state.Option
		for _, f := range filters {
			opts = append(opts, state.WithFilter(f))
		}
		return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
			s, err := state.Summarize(ctx, cl, args[0], opts...)
			if err != nil {
				return err
			}
			return printSummary(cmd, s, format)
		})
	}
	return cmd
}

func printSummary(cmd *cobra.Command, s *state.Summary, format string) error {
	out := cmd.OutOrStdout()
	for _, w := range s.Warnings {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
	}
	groups := make([]state.Row, 0, len(s.Keys))
	for _, k := range s.Keys {
		groups = append(groups, s.Groups[k])
	}
	doc := map[string]any{"summary_by": s.SummaryBy, "stats": s.Stats, "summary": groups}
	switch format {
	case "json":
		return writeStateJSON(out, doc)
	case "yaml":
		return yaml.NewEncoder(out).Encode(doc)
	}
	for _, k := range allColumns([]state.Row{s.Stats}) {
		fmt.Fprintf(out, "%s: %v\n", k, s.Stats[k])
	}
	fmt.Fprintf(out, "\nby %s:\n", s.SummaryBy)
	cols := allColumns(groups)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(cols, "\t")))
	for _, g := range groups {
		vals := make([]string, len(cols))
		for i, c := range cols {
			vals[i] = cell(g[c])
		}
		fmt.Fprintln(tw, strings.Join(vals, "\t"))
	}
	return tw.Flush()
}
