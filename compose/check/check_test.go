package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

const envExample = "compose/.env.example"

// Where each service's program reads its variables. A program reads a variable by its literal name in double
// quotes (the config readers in command-api/src/config.cpp and projector/src/projector.cpp); messages that
// name a variable go on after it ("CREDITS_API_KEYS is required"), so they are not counted as reads. The topic
// init is a shell script: ${CREDITS_...}.
var readers = map[string]struct {
	glob    string
	pattern *regexp.Regexp
	min     int // fewer found means the pattern no longer matches the code, not that the program reads less
}{
	"api":         {"command-api/src/*.cpp", regexp.MustCompile(`"(CREDITS_[A-Z0-9_]+)"`), 30},
	"projector":   {"projector/src/*.cpp", regexp.MustCompile(`"(CREDITS_[A-Z0-9_]+)"`), 10},
	"init-topics": {"compose/create-topics.sh", regexp.MustCompile(`\$\{(CREDITS_[A-Z0-9_]+)`), 5},
}

func root(t *testing.T) string {
	t.Helper()
	dir, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func load(t *testing.T, envFile string) *types.Project {
	t.Helper()
	if envFile != "" && !filepath.IsAbs(envFile) {
		envFile = filepath.Join(root(t), envFile)
	}
	project, err := loadProject(envFile)
	if err != nil {
		t.Fatalf("compose file does not load with env file %q: %v", envFile, err)
	}
	return project
}

// loads gives the project as it loads without a .env and with compose/.env.example.
func loads(t *testing.T) map[string]*types.Project {
	return map[string]*types.Project{"no .env": load(t, ""), ".env.example": load(t, envExample)}
}

// variablesRead returns the CREDITS_* variables the program of a service reads, from its source.
func variablesRead(t *testing.T, service string) []string {
	t.Helper()
	r := readers[service]
	files, err := filepath.Glob(filepath.Join(root(t), r.glob))
	if err != nil || len(files) == 0 {
		t.Fatalf("no sources for %s at %s", service, r.glob)
	}
	seen := map[string]bool{}
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range r.pattern.FindAllStringSubmatch(string(text), -1) {
			seen[m[1]] = true
		}
	}
	if len(seen) < r.min {
		t.Fatalf("found only %d variables read in %s (expected at least %d): has the way they are read changed?",
			len(seen), r.glob, r.min)
	}
	return sortedKeys(seen)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// drift compares the variables a service declares with those its program reads: both ways, so a variable
// renamed or added in the code, or a typo in the compose file, is reported.
func drift(service string, declared, read []string) []string {
	var out []string
	for _, name := range declared {
		if !slices.Contains(read, name) {
			out = append(out, service+" sets "+name+", which its program does not read")
		}
	}
	for _, name := range read {
		if !slices.Contains(declared, name) {
			out = append(out, service+" does not pass "+name+", which its program reads")
		}
	}
	return out
}

// declared returns every variable name in a service's environment, set or passed through.
func declared(service types.ServiceConfig) []string {
	return sortedKeys(service.Environment)
}

func service(t *testing.T, project *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := project.GetService(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func oneShot(s types.ServiceConfig) bool { return s.Restart == types.RestartPolicyNo }

func TestComposeFileLoadsValidatesAndNormalizes(t *testing.T) {
	for how, project := range loads(t) {
		if project.Name != "credits" {
			t.Errorf("%s: project name %q, want credits (the network is credits_default)", how, project.Name)
		}
		want := []string{"api", "init-topics", "kafka", "projector", "redis"}
		if got := project.ServiceNames(); !reflect.DeepEqual(sorted(got), want) {
			t.Errorf("%s: services %v, want %v", how, got, want)
		}
	}
	var raw map[string]any
	text, err := os.ReadFile(filepath.Join(root(t), composeFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(text, &raw); err != nil {
		t.Fatal(err)
	}
	if _, has := raw["version"]; has {
		t.Error("the top-level version key is obsolete in the Compose Specification")
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}

func TestEveryLongRunningServiceHasAHealthcheck(t *testing.T) {
	project := load(t, "")
	for _, s := range project.Services {
		if oneShot(s) {
			continue // its exit code is its health: dependents wait for service_completed_successfully
		}
		if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0 {
			t.Errorf("%s has no health check", s.Name)
			continue
		}
		if s.HealthCheck.Interval == nil || s.HealthCheck.Timeout == nil || s.HealthCheck.StartPeriod == nil {
			t.Errorf("%s: the health check must set interval, timeout and start_period", s.Name)
		}
		if s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s: restart %q, want unless-stopped", s.Name, s.Restart)
		}
	}
}

func TestDependenciesWaitUntilHealthyOrDone(t *testing.T) {
	project := load(t, "")
	for _, s := range project.Services {
		for name, dep := range s.DependsOn {
			target := service(t, project, name)
			want := types.ServiceConditionHealthy
			if oneShot(target) {
				want = types.ServiceConditionCompletedSuccessfully
			}
			if dep.Condition != want {
				t.Errorf("%s depends on %s with %q, want %q", s.Name, name, dep.Condition, want)
			}
		}
	}
	for _, name := range []string{"api", "projector"} {
		for _, dep := range []string{"kafka", "redis", "init-topics"} {
			if _, ok := service(t, project, name).DependsOn[dep]; !ok {
				t.Errorf("%s must wait for %s", name, dep)
			}
		}
	}
}

var versionTag = regexp.MustCompile(`^[0-9]+(\.[0-9]+)+(-[a-z0-9.]+)*$`)

// pinned says why an image reference is not pinned to a version, or "".
func pinned(image string) string {
	slash := strings.LastIndex(image, "/")
	colon := strings.LastIndex(image, ":")
	if colon <= slash {
		return "has no tag (that is latest)"
	}
	tag := image[colon+1:]
	if tag == "latest" || !versionTag.MatchString(tag) {
		return "tag " + tag + " is not a version"
	}
	return ""
}

func TestImagesArePinned(t *testing.T) {
	project := load(t, "")
	for _, s := range project.Services {
		if s.Build != nil {
			// Built from this repository: a local name, never pulled; still not latest.
			if why := pinned(s.Image); why != "" && !strings.HasSuffix(s.Image, ":local") {
				t.Errorf("%s: image %s %s", s.Name, s.Image, why)
			}
			continue
		}
		if why := pinned(s.Image); why != "" {
			t.Errorf("%s: image %s %s", s.Name, s.Image, why)
		}
	}
	// The Dockerfile's bases too (FROM <image> AS <stage>; FROM <stage> names an earlier stage).
	text, err := os.ReadFile(filepath.Join(root(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string]bool{}
	from := regexp.MustCompile(`(?m)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?`)
	matches := from.FindAllStringSubmatch(string(text), -1)
	if len(matches) < 2 {
		t.Fatalf("the Dockerfile has %d stages, want a builder and a runtime", len(matches))
	}
	for _, m := range matches {
		if !stages[m[1]] {
			if why := pinned(m[1]); why != "" {
				t.Errorf("Dockerfile: FROM %s %s", m[1], why)
			}
		}
		stages[m[2]] = true
	}
}

func TestKafkaIsTheVersionOfTheNativeBroker(t *testing.T) {
	pom, err := os.ReadFile(filepath.Join(root(t), "scripts/kafka-pom.xml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`<artifactId>kafka_2\.13</artifactId>\s*<version>([^<]+)</version>`).FindSubmatch(pom)
	if m == nil {
		t.Fatal("scripts/kafka-pom.xml: no kafka_2.13 version")
	}
	project := load(t, "")
	for _, name := range []string{"kafka", "init-topics"} {
		if want := "apache/kafka:" + string(m[1]); service(t, project, name).Image != want {
			t.Errorf("%s: image %s, want %s (the native broker's version)", name, service(t, project, name).Image, want)
		}
	}
}

func TestOnlyTheAPIIsPublishedAndOnlyOnLoopback(t *testing.T) {
	for how, project := range loads(t) {
		for _, s := range project.Services {
			if s.Name != "api" && len(s.Ports) > 0 {
				t.Errorf("%s: %s publishes %v", how, s.Name, s.Ports)
			}
		}
		ports := service(t, project, "api").Ports
		if len(ports) != 1 || ports[0].HostIP != "127.0.0.1" || ports[0].Published != "8080" || ports[0].Target != 8080 {
			t.Errorf("%s: api publishes %+v, want 127.0.0.1:8080 -> 8080", how, ports)
		}
	}
}

func TestDataLivesInNamedVolumesAndRedisAppendsOnly(t *testing.T) {
	project := load(t, "")
	for name, want := range map[string]string{"kafka": "/var/lib/kafka/data", "redis": "/data"} {
		found := false
		for _, v := range service(t, project, name).Volumes {
			if v.Type == types.VolumeTypeVolume && v.Target == want {
				if _, declared := project.Volumes[v.Source]; !declared {
					t.Errorf("%s: volume %s is not declared", name, v.Source)
				}
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no named volume at %s", name, want)
		}
	}
	if command := strings.Join(service(t, project, "redis").Command, " "); !strings.Contains(command, "--appendonly yes") {
		t.Errorf("redis runs %q, want --appendonly yes", command)
	}
	kafka := service(t, project, "kafka").Environment
	if dirs := kafka["KAFKA_LOG_DIRS"]; dirs == nil || *dirs != "/var/lib/kafka/data" {
		t.Error("kafka: KAFKA_LOG_DIRS must be the volume, /var/lib/kafka/data")
	}
}

// Each service declares exactly the CREDITS_* variables its program reads: a variable added to or renamed in
// the code, or a typo here, fails this test.
func TestEachServiceDeclaresExactlyTheVariablesItsProgramReads(t *testing.T) {
	project := load(t, "")
	for name := range readers {
		s := service(t, project, name)
		for _, v := range declared(s) {
			if !strings.HasPrefix(v, "CREDITS_") {
				t.Errorf("%s sets %s, which is not one of the programs' CREDITS_* variables", name, v)
			}
		}
		for _, problem := range drift(name, declared(s), variablesRead(t, name)) {
			t.Error(problem)
		}
	}
	for _, s := range project.Services {
		if _, checked := readers[s.Name]; !checked {
			for v := range s.Environment {
				if strings.HasPrefix(v, "CREDITS_") {
					t.Errorf("%s sets %s but runs none of our programs", s.Name, v)
				}
			}
		}
	}
}

// The drift check must be able to fail: a variable that is set but not read, and one read but not set.
func TestDriftIsReportedBothWays(t *testing.T) {
	got := drift("api", []string{"CREDITS_A", "CREDITS_B"}, []string{"CREDITS_B", "CREDITS_C"})
	want := []string{"api sets CREDITS_A, which its program does not read",
		"api does not pass CREDITS_C, which its program reads"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("drift = %q, want %q", got, want)
	}
	project := load(t, "")
	api := service(t, project, "api")
	typo := "CREDITS_HTTP_THREAD"
	api.Environment[typo] = nil
	if problems := drift("api", declared(api), variablesRead(t, "api")); len(problems) != 1 ||
		!strings.Contains(problems[0], typo) {
		t.Errorf("a typo in the api's environment gave %q", problems)
	}
}

// The API, the projector and the topic init see the same brokers, topics and Redis database.
func TestSharedVariablesAgreeAcrossServices(t *testing.T) {
	for how, project := range loads(t) {
		seen := map[string]string{}
		from := map[string]string{}
		for _, s := range project.Services {
			for name, value := range credits(s) {
				if previous, ok := seen[name]; ok && previous != value {
					t.Errorf("%s: %s is %q in %s but %q in %s", how, name, value, s.Name, previous, from[name])
				}
				seen[name], from[name] = value, s.Name
			}
		}
	}
}

func TestNoVariableIsSetEmpty(t *testing.T) {
	// The programs refuse an empty value at start-up; an unset one means their default.
	for how, project := range loads(t) {
		for _, s := range project.Services {
			for name, value := range credits(s) {
				if value == "" {
					t.Errorf("%s: %s gets %s empty", how, s.Name, name)
				}
			}
		}
	}
}

// envExampleLines returns the example's variables: those set, and those shown commented out (# NAME=value).
func envExampleLines(t *testing.T) (set, commented map[string]string) {
	text, err := os.ReadFile(filepath.Join(root(t), envExample))
	if err != nil {
		t.Fatal(err)
	}
	set, commented = map[string]string{}, map[string]string{}
	line := regexp.MustCompile(`^(# )?([A-Z][A-Z0-9_]*)=(.*)$`)
	for _, l := range strings.Split(string(text), "\n") {
		if m := line.FindStringSubmatch(l); m != nil {
			if m[1] == "" {
				set[m[2]] = m[3]
			} else {
				commented[m[2]] = m[3]
			}
		}
	}
	if len(set) == 0 {
		t.Fatal(envExample + " sets nothing")
	}
	return set, commented
}

// The example is the defaults written out: loading with it gives the same project as loading without it.
func TestEnvExampleIsTheDefaultsWrittenOut(t *testing.T) {
	without, with := load(t, ""), load(t, envExample)
	for _, name := range without.ServiceNames() {
		a, b := service(t, without, name), service(t, with, name)
		if !reflect.DeepEqual(a.Environment, b.Environment) {
			t.Errorf("%s: environment without .env %v, with %s %v", name, credits(a), envExample, credits(b))
		}
		if !reflect.DeepEqual(a.Ports, b.Ports) {
			t.Errorf("%s: ports without .env %v, with %s %v", name, a.Ports, envExample, b.Ports)
		}
	}
	// Every variable it names is used: set on a service, or interpolated in the compose file.
	text, err := os.ReadFile(filepath.Join(root(t), composeFile))
	if err != nil {
		t.Fatal(err)
	}
	set, commented := envExampleLines(t)
	for _, names := range []map[string]string{set, commented} {
		for name := range names {
			used := strings.Contains(string(text), "${"+name+":")
			for _, s := range without.Services {
				_, declared := s.Environment[name]
				used = used || declared
			}
			if !used {
				t.Errorf("%s names %s, which the compose file does not use", envExample, name)
			}
		}
	}
}

// A variable the compose file passes through reaches the container with the value set in .env.
func TestPassedThroughVariablesReachTheirService(t *testing.T) {
	set, commented := envExampleLines(t)
	if len(commented) == 0 {
		t.Fatal(envExample + " shows no optional variable")
	}
	var lines []string
	for name, value := range set {
		lines = append(lines, name+"="+value)
	}
	for name, value := range commented {
		lines = append(lines, name+"="+value)
	}
	envFile := filepath.Join(t.TempDir(), ".env")
	if err := os.WriteFile(envFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	project := load(t, envFile)
	for name, value := range commented {
		reached := false
		for _, s := range project.Services {
			if v, ok := credits(s)[name]; ok {
				reached = true
				if v != value {
					t.Errorf("%s gets %s=%q, want %q", s.Name, name, v, value)
				}
			}
		}
		if !reached {
			t.Errorf("%s=%s in .env reaches no service", name, value)
		}
	}
	// Unset, it does not reach the container at all (not even empty): the program's default applies.
	for name := range commented {
		for _, s := range load(t, "").Services {
			if _, ok := credits(s)[name]; ok {
				t.Errorf("without .env %s still gets %s", s.Name, name)
			}
		}
	}
}

// compose/consumer.yml, the README's downstream consumer, merges into the stack and reads from inside it.
func TestTheExampleConsumerJoinsTheStack(t *testing.T) {
	project, err := loadProject("", "compose/consumer.yml")
	if err != nil {
		t.Fatal(err)
	}
	alerts := service(t, project, "alerts")
	if why := pinned(alerts.Image); why != "" {
		t.Errorf("alerts: image %s %s", alerts.Image, why)
	}
	if command := strings.Join(alerts.Command, " "); !strings.Contains(command, "--brokers kafka:9092") ||
		!strings.Contains(command, "--topic credits.ledger") {
		t.Errorf("alerts runs %q, want it on kafka:9092 and credits.ledger", command)
	}
	if dep, ok := alerts.DependsOn["init-topics"]; !ok || dep.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Error("alerts must start after the topics exist")
	}
	if len(alerts.Ports) > 0 {
		t.Error("alerts publishes a port")
	}
}

// The broker runs with the native broker's settings (scripts/lib.sh, write_kafka_config): each setting there
// with a fixed value is the KAFKA_* variable of the same name in the kafka service (the apache/kafka image turns
// KAFKA_A_B into a.b). Settings that name hosts, ports or paths differ by nature and hold a shell variable there.
func TestKafkaHasTheNativeBrokersSettings(t *testing.T) {
	text, err := os.ReadFile(filepath.Join(root(t), "scripts/lib.sh"))
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?s)cat >"\$KAFKA_CONFIG" <<EOF\n(.*?)\nEOF\n`).FindSubmatch(text)
	if block == nil {
		t.Fatal("scripts/lib.sh: the broker configuration was not found")
	}
	env := service(t, load(t, ""), "kafka").Environment
	checked := 0
	for _, m := range regexp.MustCompile(`(?m)^([a-z][a-z.]*)=(.*)$`).FindAllStringSubmatch(string(block[1]), -1) {
		if strings.Contains(m[2], "$") {
			continue
		}
		name := "KAFKA_" + strings.ToUpper(strings.ReplaceAll(m[1], ".", "_"))
		if v := env[name]; v == nil || *v != m[2] {
			t.Errorf("kafka: %s is %v, the native broker has %s=%s", name, deref(v), m[1], m[2])
		}
		checked++
	}
	if checked < 10 {
		t.Fatalf("only %d native broker settings found", checked)
	}
}

func deref(v *string) string {
	if v == nil {
		return "unset"
	}
	return *v
}
