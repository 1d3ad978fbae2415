package invariants

import (
	"sort"

	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
)

// PodSecurity is the Pod Security Standards level a workload needs, and why it needs no less.
type PodSecurity struct {
	Object  string   `json:"object"`
	Level   string   `json:"level"`             // restricted, baseline or privileged
	Reasons []string `json:"reasons,omitempty"` // what keeps it out of the next stricter level
}

// PodSecurityLevels evaluates every pod template with the upstream Pod Security Admission
// checks (k8s.io/pod-security-admission) at the latest policy version.
func PodSecurityLevels(set *manifest.Set) ([]PodSecurity, error) {
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		return nil, err
	}
	var out []PodSecurity
	for obj, pt := range set.PodSpecs() {
		ps := PodSecurity{Object: obj, Level: string(api.LevelRestricted)}
		for _, lvl := range []api.Level{api.LevelRestricted, api.LevelBaseline} {
			res := policy.AggregateCheckResults(eval.EvaluatePod(api.LevelVersion{Level: lvl, Version: api.LatestVersion()}, &pt.ObjectMeta, &pt.Spec))
			if res.Allowed {
				break
			}
			ps.Reasons = nil
			for _, r := range res.ForbiddenReasons {
				ps.Reasons = append(ps.Reasons, r)
			}
			if lvl == api.LevelRestricted {
				ps.Level = string(api.LevelBaseline)
			} else {
				ps.Level = string(api.LevelPrivileged)
			}
		}
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Object < out[j].Object })
	return out, nil
}
