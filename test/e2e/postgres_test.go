//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// An external PostgreSQL (hack/postgres.sh: Debian's postgresql on this machine, listening on
// the node's bridge address): the chart is installed with database.use=postgresql, the
// password from a Secret the user made; the langbot stand-in connects with what the chart
// gave it and writes a row, which the test reads back from the database itself. A wrong Secret
// key or env name fails here: the stand-in then cannot connect and the pod never becomes Ready.
func TestExternalPostgreSQL(t *testing.T) {
	e := newEnv(t)
	pg := map[string]string{}
	for _, k := range []string{"LBK_PG_HOST", "LBK_PG_PORT", "LBK_PG_USER", "LBK_PG_PASSWORD", "LBK_PG_DATABASE"} {
		pg[k] = os.Getenv(k)
		require.NotEmpty(t, pg[k], "%s: run hack/postgres.sh up and eval \"$(bash hack/postgres.sh env)\" (ci/40-e2e.sh does)", k)
	}
	ns := uniqueNS("postgres")
	e.createNamespace(ns)
	_, err := e.cs.CoreV1().Secrets(ns).Create(context.Background(), secretObject(ns, "langbot-postgresql", "password", pg["LBK_PG_PASSWORD"]), metav1.CreateOptions{})
	require.NoError(t, err)

	e.install("langbot", ns, true, "-f", e.values("real-node.yaml"),
		"--set", "database.use=postgresql",
		"--set", "database.postgresql.host="+pg["LBK_PG_HOST"],
		"--set", "database.postgresql.port="+pg["LBK_PG_PORT"],
		"--set", "database.postgresql.user="+pg["LBK_PG_USER"],
		"--set", "database.postgresql.database="+pg["LBK_PG_DATABASE"],
		"--set", "database.postgresql.passwordSecretRef.name=langbot-postgresql",
		"--set", "database.postgresql.passwordSecretRef.key=password")
	e.assertRunning(ns)

	out := e.outcome(ns, "the stand-in's PostgreSQL proof", 2*time.Minute, func(o standinOutcome) bool { return o.Database["ok"] == true })
	assert.Equal(t, "postgresql", out.Database["use"])
	assert.Equal(t, pg["LBK_PG_HOST"], out.Database["host"])
	assert.Equal(t, pg["LBK_PG_USER"], out.Database["user"])
	id, ok := out.Database["row_id"].(float64)
	require.True(t, ok, "the outcome names the row it wrote: %v", out.Database)

	// Read the row back over loopback with the same role: it is in the real database.
	port, err := strconv.Atoi(pg["LBK_PG_PORT"])
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgresql://%s:%s@127.0.0.1:%d/%s?sslmode=disable",
		pg["LBK_PG_USER"], pg["LBK_PG_PASSWORD"], port, pg["LBK_PG_DATABASE"]))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var note string
	require.NoError(t, conn.QueryRow(ctx, "SELECT note FROM "+fmt.Sprint(out.Database["table"])+" WHERE id = $1", int64(id)).Scan(&note))
	assert.True(t, strings.HasPrefix(note, "written by the langbot stand-in"), note)

	// The password reached the pod only through the Secret: never a plain env value.
	d, err := e.cs.AppsV1().Deployments(ns).Get(context.Background(), "langbot", metav1.GetOptions{})
	require.NoError(t, err)
	for _, ev := range d.Spec.Template.Spec.Containers[0].Env {
		assert.NotContains(t, ev.Value, pg["LBK_PG_PASSWORD"], "env %s", ev.Name)
		if ev.Name == "DATABASE__POSTGRESQL__PASSWORD" {
			require.NotNil(t, ev.ValueFrom, "the password comes from a secretKeyRef")
			require.NotNil(t, ev.ValueFrom.SecretKeyRef)
			assert.Equal(t, "langbot-postgresql", ev.ValueFrom.SecretKeyRef.Name)
			assert.Equal(t, "password", ev.ValueFrom.SecretKeyRef.Key)
		}
	}
}
