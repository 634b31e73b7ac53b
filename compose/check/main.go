// Command check loads compose/docker-compose.yml with compose-go, the loader Docker Compose itself uses
// (interpolation, schema validation, normalization), and prints the CREDITS_* environment one service's
// container would get, as a JSON object. Its tests (`go test`) are the checks of the compose stack;
// scripts/test-compose.sh runs them, and tests/integration/test_compose_env.py runs this command to start the
// native stack with the environment compose would pass.
//
//	go run ./compose/check [-env-file compose/.env.example] SERVICE
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// composeFile is relative to the repository's root, which is found by walking up from the working directory.
const composeFile = "compose/docker-compose.yml"

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, composeFile)); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New(composeFile + " not found in the working directory or above it")
		}
		dir = parent
	}
}

// loadProject loads the compose file as `docker compose -f compose/docker-compose.yml` would with only the
// variables of envFile ("" for none) and none of this process's environment, so the result does not depend on
// who runs it. Docker Compose would also read compose/.env; a developer's own copy must not change the checks.
// Further files (relative to the repository) are merged over it, as with more -f options.
func loadProject(envFile string, more ...string) (*types.Project, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	files := []string{filepath.Join(root, composeFile)}
	for _, f := range more {
		files = append(files, filepath.Join(root, f))
	}
	options := []cli.ProjectOptionsFn{cli.WithWorkingDirectory(filepath.Join(root, "compose"))}
	if envFile != "" {
		options = append(options, cli.WithEnvFiles(envFile), cli.WithDotEnv)
	}
	opts, err := cli.NewProjectOptions(files, options...)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

// credits returns the CREDITS_* variables a service's container gets, without the declared ones left unset.
func credits(service types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for name, value := range service.Environment {
		if strings.HasPrefix(name, "CREDITS_") && value != nil {
			out[name] = *value
		}
	}
	return out
}

func main() {
	envFile := flag.String("env-file", "", "the .env file compose would read (default: none)")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: check [-env-file FILE] SERVICE")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if *envFile != "" {
		// Relative to where the command runs, like docker compose's --env-file.
		abs, err := filepath.Abs(*envFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		*envFile = abs
	}
	project, err := loadProject(*envFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	service, err := project.GetService(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(credits(service)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
