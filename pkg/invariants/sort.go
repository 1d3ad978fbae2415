package invariants

import "sort"

func sortFindings(f []Finding) []Finding {
	sort.Slice(f, func(i, j int) bool {
		if f[i].Object != f[j].Object {
			return f[i].Object < f[j].Object
		}
		return f[i].Message < f[j].Message
	})
	return f
}
