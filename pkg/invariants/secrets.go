package invariants

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
)

// The secret-refs check: every secret reaches a container only as valueFrom.secretKeyRef naming
// both a Secret and a key, never as a plain env value or a ConfigMap entry, and LangBot's
// external services get the credentials they cannot run without.

const secretRefsCheck = "secret-refs"

// langbotSecretEnv maps each LangBot setting that holds a secret to the values field that sets it.
var langbotSecretEnv = map[string]string{
	"DATABASE__POSTGRESQL__PASSWORD": "database.postgresql.passwordSecretRef",
	"VDB__QDRANT__API_KEY":           "vdb.qdrant.apiKeySecretRef",
	"VDB__MILVUS__TOKEN":             "vdb.milvus.tokenSecretRef",
	"VDB__PGVECTOR__PASSWORD":        "vdb.pgvector.passwordSecretRef",
	"VDB__VALKEY_SEARCH__PASSWORD":   "vdb.valkeySearch.passwordSecretRef",
	"STORAGE__S3__ACCESS_KEY_ID":     "storage.s3.accessKeyIdSecretRef",
	"STORAGE__S3__SECRET_ACCESS_KEY": "storage.s3.secretAccessKeySecretRef",
	"API__GLOBAL_API_KEY":            "api.globalApiKeySecretRef",
	"PGPASSWORD":                     "database.postgresql.passwordSecretRef",
}

// urlEnv maps each LangBot URL setting to the values field of its Secret form.
var urlEnv = map[string]string{
	"DATABASE__POSTGRESQL__URL": "database.postgresql.urlSecretRef",
	"VDB__QDRANT__URL":          "vdb.qdrant.apiKeySecretRef",
	"VDB__MILVUS__URI":          "vdb.milvus.tokenSecretRef",
	"STORAGE__S3__ENDPOINT_URL": "storage.s3.accessKeyIdSecretRef / secretAccessKeySecretRef",
}

// credentialURL matches scheme://user:password@ (a password in the authority part).
var credentialURL = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^/@?#\s]*:[^/@?#\s]*@`)

func checkSecretRefs(r *Release) []Finding {
	var out []Finding
	specs := r.Set.PodSpecs()
	objects := make([]string, 0, len(specs))
	for o := range specs {
		objects = append(objects, o)
	}
	sort.Strings(objects)
	for _, o := range objects {
		spec := &specs[o].Spec
		for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
			out = append(out, containerSecretFindings(r, o, c)...)
		}
	}
	out = append(out, configMapSecretFindings(r)...)
	return append(out, langbotCredentialFindings(r)...)
}

func containerSecretFindings(r *Release, object string, c corev1.Container) []Finding {
	var out []Finding
	where := fmt.Sprintf("%s container %s", object, c.Name)
	for _, e := range c.Env {
		field := langbotSecretEnv[e.Name]
		if field == "" {
			field = "the env entry (extraEnv)"
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name == "" {
				out = append(out, find(secretRefsCheck, where, "env %s: secretKeyRef has no name: set %s.name to an existing Secret", e.Name, field))
			}
			if ref.Key == "" {
				out = append(out, find(secretRefsCheck, where, "env %s: secretKeyRef of Secret %q has no key: set %s.key to the key holding the value", e.Name, ref.Name, field))
			}
			if s := r.Set.Secrets()[ref.Name]; s != nil && ref.Key != "" && !secretHasKey(s, ref.Key) && (ref.Optional == nil || !*ref.Optional) {
				out = append(out, find(secretRefsCheck, where, "env %s: Secret %q rendered by this release has no key %q (it has %s): the pod would not start", e.Name, ref.Name, ref.Key, strings.Join(secretKeys(s), ", ")))
			}
			continue
		}
		if _, secret := langbotSecretEnv[e.Name]; secret && e.Value != "" {
			out = append(out, find(secretRefsCheck, where, "env %s has a plain value: a secret must come from an existing Secret; set %s {name, key} instead of a value", e.Name, field))
		}
		if credentialURL.MatchString(e.Value) {
			hint := "put the URL in a Secret and reference it with valueFrom.secretKeyRef"
			if f, ok := urlEnv[e.Name]; ok {
				hint = "set " + f + " instead"
			}
			out = append(out, find(secretRefsCheck, where, "env %s is a URL with a password in plain text: %s", e.Name, hint))
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.SecretRef != nil && ef.SecretRef.Name == "" {
			out = append(out, find(secretRefsCheck, where, "envFrom secretRef has no name: set it to an existing Secret"))
		}
	}
	return out
}

func configMapSecretFindings(r *Release) []Finding {
	var out []Finding
	for _, o := range r.Set.Objects {
		cm, ok := o.Typed.(*corev1.ConfigMap)
		if !ok {
			continue
		}
		keys := make([]string, 0, len(cm.Data))
		for k := range cm.Data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if f, secret := langbotSecretEnv[k]; secret {
				out = append(out, find(secretRefsCheck, "ConfigMap/"+cm.Name, "holds the secret %s: a ConfigMap is readable by anyone who can read the namespace's configuration; set %s instead", k, f))
			} else if credentialURL.MatchString(cm.Data[k]) {
				out = append(out, find(secretRefsCheck, "ConfigMap/"+cm.Name, "key %s is a URL with a password: keep credentials in a Secret", k))
			}
		}
	}
	return out
}

// langbotCredentialFindings: LangBot falls back to built-in credentials ("postgres") or empty
// ones when a backend is selected without them; name the values that provide them.
func langbotCredentialFindings(r *Release) []Finding {
	if r.LangBot == nil {
		return nil
	}
	c := manifest.Container(&r.LangBot.Spec.Template.Spec, langbotName)
	if c == nil {
		return nil
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	fromSecret := func(name string) bool {
		e, ok := env[name]
		return ok && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
	}
	plain := func(name string) string { return env[name].Value }
	where := objName(r.LangBot)
	var out []Finding
	if plain("DATABASE__USE") == "postgresql" && !fromSecret("DATABASE__POSTGRESQL__URL") && !credentialURL.MatchString(plain("DATABASE__POSTGRESQL__URL")) &&
		!fromSecret("DATABASE__POSTGRESQL__PASSWORD") && !fromSecret("PGPASSWORD") {
		out = append(out, find(secretRefsCheck, where, "DATABASE__USE=postgresql without a password from a Secret: set database.postgresql.passwordSecretRef {name, key} (or urlSecretRef); LangBot would use its default password \"postgres\""))
	}
	if plain("STORAGE__USE") == "s3" {
		for _, n := range []string{"STORAGE__S3__ACCESS_KEY_ID", "STORAGE__S3__SECRET_ACCESS_KEY"} {
			if !fromSecret(n) {
				out = append(out, find(secretRefsCheck, where, "STORAGE__USE=s3 without %s from a Secret: set %s {name, key}", n, langbotSecretEnv[n]))
			}
		}
	}
	return out
}

func secretHasKey(s *corev1.Secret, key string) bool {
	if _, ok := s.Data[key]; ok {
		return true
	}
	_, ok := s.StringData[key]
	return ok
}

func secretKeys(s *corev1.Secret) []string {
	var keys []string
	for k := range s.Data {
		keys = append(keys, k)
	}
	for k := range s.StringData {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		return []string{"none"}
	}
	return keys
}
