// Command composeenv loads a Compose file with compose-go (the loader docker compose uses) and
// prints the resolved `environment` of every service as JSON:
//
//	{"service": {"VAR": "value", ...}, ...}
//
// env_file entries are merged under `environment:` and ${VAR:-default} / ${VAR:?err} are
// interpolated, as `docker compose config` does. The interpolation environment is made only of the
// --env KEY=VALUE flags plus, for keys they do not set, the project directory's .env file (if
// present); the process environment is not read for interpolation.
//
// Usage: composeenv -f <compose file> [-f <override>...] [--project-dir DIR] [--env KEY=VALUE ...]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "composeenv:", err)
		os.Exit(1)
	}
}

func run() error {
	var files, envs multi
	var projectDir string
	fs := flag.NewFlagSet("composeenv", flag.ContinueOnError)
	fs.Var(&files, "f", "compose file (repeatable, later files override earlier ones)")
	fs.StringVar(&projectDir, "project-dir", "", "project directory (default: directory of the first -f file)")
	fs.Var(&envs, "env", "KEY=VALUE for interpolation (repeatable); the process environment is not used")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: composeenv -f <compose file> [--project-dir DIR] [--env KEY=VALUE ...]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		return err
	}
	if len(files) == 0 {
		fs.Usage()
		return fmt.Errorf("at least one -f <compose file> is required")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	for _, e := range envs {
		if !strings.Contains(e, "=") {
			return fmt.Errorf("--env %q: expected KEY=VALUE", e)
		}
	}

	// Same sequence as docker compose's ProjectOptions, minus cli.WithOsEnv: explicit variables
	// first, then the project's .env (WithEnvFiles() with no argument selects <project dir>/.env if
	// it exists; WithDotEnv reads it and only adds keys not already set).
	opts, err := cli.NewProjectOptions(files,
		cli.WithWorkingDirectory(projectDir),
		cli.WithEnv(envs),
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithDefaultProfiles(),
		cli.WithResolvedPaths(true),
		cli.WithDiscardEnvFile,
	)
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return err
	}

	out := make(map[string]map[string]*string, len(project.Services))
	for name, svc := range project.Services {
		env := make(map[string]*string, len(svc.Environment))
		for k, v := range svc.Environment {
			env[k] = v // nil (JSON null) for a bare `VAR` that is set nowhere, like compose config
		}
		out[name] = env
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
