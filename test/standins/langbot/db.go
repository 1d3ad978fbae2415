package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/langbot-k8s/langbot-k8s/test/standins/internal/standin"
)

// ProofTable is where the stand-in proves its PostgreSQL connection; the end-to-end suite
// reads the row back.
const ProofTable = "langbot_standin_proof"

// dbConfig is database.* of templates/config.yaml after the env overrides.
type dbConfig struct {
	use string
	url string // database.postgresql.url, "" when the structured fields are used
	// structured fields (defaults of pkg/persistence/databases/postgresql.py initialize)
	host, user, password, database string
	port                           int
}

func loadDBConfig() (dbConfig, error) {
	c := dbConfig{
		use:      envString("DATABASE__USE", "sqlite"),
		url:      strings.TrimSpace(os.Getenv("DATABASE__POSTGRESQL__URL")),
		host:     envString("DATABASE__POSTGRESQL__HOST", "127.0.0.1"),
		user:     envString("DATABASE__POSTGRESQL__USER", "postgres"),
		password: envString("DATABASE__POSTGRESQL__PASSWORD", "postgres"),
		database: envString("DATABASE__POSTGRESQL__DATABASE", "postgres"),
	}
	if c.use != "postgresql" {
		return c, nil
	}
	var err error
	if c.port, err = standin.BoundedInt("DATABASE__POSTGRESQL__PORT", 5432, 1, 65535); err != nil {
		return c, err
	}
	// postgresql.py _pool_integer: the pool settings are checked at start-up even though the
	// stand-in opens a single connection.
	pool, err := standin.BoundedInt("DATABASE__POSTGRESQL__POOL_SIZE", 10, 1, 100)
	if err != nil {
		return c, err
	}
	overflow, err := standin.BoundedInt("DATABASE__POSTGRESQL__MAX_OVERFLOW", 10, 0, 100)
	if err != nil {
		return c, err
	}
	if pool+overflow > 100 {
		return c, fmt.Errorf("DATABASE__POSTGRESQL__POOL_SIZE + DATABASE__POSTGRESQL__MAX_OVERFLOW = %d must not exceed 100", pool+overflow)
	}
	if _, err := standin.BoundedInt("DATABASE__POSTGRESQL__POOL_TIMEOUT_SECONDS", 30, 1, 300); err != nil {
		return c, err
	}
	if _, err := standin.BoundedInt("DATABASE__POSTGRESQL__POOL_RECYCLE_SECONDS", 1800, 1, 86400); err != nil {
		return c, err
	}
	return c, nil
}

// pgxConfig builds the connection LangBot's PostgreSQLDatabaseManager would open
// (pkg/persistence/databases/postgresql.py initialize): a non-empty url wins (postgresql:// or
// postgresql+asyncpg://, the libpq sslmode= spelling passed on as asyncpg's ssl=, conflicting
// values refused: pkg/persistence/postgresql_url.py normalize_asyncpg_url; a URL without a
// password falls back to PGPASSWORD, as asyncpg does), else the structured fields make the same
// postgresql+asyncpg URL (sqlalchemy.URL.create). Either way asyncpg's TLS default applies when
// the URL names no mode: PGSSLMODE, else "prefer" - TLS is tried and a server that refuses it is
// used in plain text - which is pgx's default for a URL without sslmode too.
func (c dbConfig) pgxConfig() (*pgx.ConnConfig, error) {
	raw := c.url
	if raw == "" {
		raw = (&url.URL{Scheme: "postgresql", User: url.UserPassword(c.user, c.password),
			Host: net.JoinHostPort(c.host, strconv.Itoa(c.port)), Path: "/" + c.database}).String()
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("database.postgresql.url is invalid: %w", err)
	}
	switch u.Scheme {
	case "postgresql", "postgresql+asyncpg":
		u.Scheme = "postgresql"
	default:
		return nil, fmt.Errorf("database.postgresql.url must use postgresql:// or postgresql+asyncpg://, not %q", u.Scheme)
	}
	q := u.Query()
	if ssl := q.Get("ssl"); ssl != "" {
		if m := q.Get("sslmode"); m != "" && m != ssl {
			return nil, fmt.Errorf("database.postgresql.url has conflicting ssl and sslmode options")
		}
		q.Del("ssl")
		q.Set("sslmode", ssl)
		u.RawQuery = q.Encode()
	}
	cfg, err := pgx.ParseConfig(u.String())
	if err != nil {
		return nil, fmt.Errorf("database.postgresql.url: %w", err)
	}
	return cfg, nil
}

// proveDatabase is what LangBot's persistence start-up does with the database, reduced to a
// proof: for postgresql one connection that creates a table, inserts a row and reads it back.
func proveDatabase(ctx context.Context, c dbConfig) (map[string]any, error) {
	switch c.use {
	case "sqlite":
		// database.sqlite.path on the data volume; nothing to reach.
		return map[string]any{"use": "sqlite"}, nil
	case "postgresql":
	default:
		// pkg/persistence/mgr.py: "Unsupported database type".
		return map[string]any{"use": c.use, "ok": false}, fmt.Errorf("unsupported database type %q (DATABASE__USE: sqlite or postgresql)", c.use)
	}
	res := map[string]any{"use": "postgresql", "ok": false}
	cfg, err := c.pgxConfig()
	if err != nil {
		res["error"] = err.Error()
		return res, err
	}
	res["host"], res["port"], res["user"], res["database"] = cfg.Host, cfg.Port, cfg.User, cfg.Database
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	id, err := proofRow(ctx, cfg)
	if err != nil {
		res["error"] = err.Error()
		return res, err
	}
	res["ok"], res["table"], res["row_id"] = true, ProofTable, id
	return res, nil
}

func proofRow(ctx context.Context, cfg *pgx.ConnConfig) (int64, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("connect to %s:%d as %s: %w", cfg.Host, cfg.Port, cfg.User, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+ProofTable+
		" (id bigserial PRIMARY KEY, note text NOT NULL, written_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		return 0, fmt.Errorf("create table %s: %w", ProofTable, err)
	}
	note := "written by the langbot stand-in at " + time.Now().UTC().Format(time.RFC3339Nano)
	var id int64
	if err := conn.QueryRow(ctx, "INSERT INTO "+ProofTable+" (note) VALUES ($1) RETURNING id", note).Scan(&id); err != nil {
		return 0, fmt.Errorf("insert into %s: %w", ProofTable, err)
	}
	var got string
	if err := conn.QueryRow(ctx, "SELECT note FROM "+ProofTable+" WHERE id = $1", id).Scan(&got); err != nil {
		return 0, fmt.Errorf("select row %d of %s: %w", id, ProofTable, err)
	}
	if got != note {
		return 0, fmt.Errorf("row %d of %s reads %q, wrote %q", id, ProofTable, got, note)
	}
	return id, nil
}
