// Package config reads a service's settings from the environment (or a
// secret store behind the same lookup seam), applies defaults kept in one
// place, and reports every problem at once, naming the variable, the bad
// value and what is allowed.
//
// Every variable a service reads is declared as a Var. Reading an undeclared
// name panics: that is what keeps the documented tables (generated from the
// declarations, checked by a test) and the code in step.
package config

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Var declares one environment variable.
type Var struct {
	Name string
	// Aliases are older names still accepted (the first set one wins after Name).
	Aliases []string
	// Default is the value used when the variable is unset ("" = none).
	Default string
	// Required variables must be set (checked by the reader, which may relax it
	// when an alternative was given).
	Required bool
	// Secret values are never printed: not in errors, logs or metrics.
	Secret bool
	// Multiline values get a literal `\n` turned into a newline (PEM keys in one line).
	Multiline bool
	// Doc is one sentence for the table.
	Doc string
}

// Lookup returns a variable's value and whether it was set.
type Lookup func(name string) (string, bool)

// Env looks variables up in the process environment. An empty value counts
// as unset, as docker-compose writes `VAR:` placeholders as empty strings.
func Env(name string) (string, bool) {
	v, ok := os.LookupEnv(name)
	if v == "" {
		return "", false
	}
	return v, ok
}

// Chain tries each lookup in order; the first that has the variable wins
// (the environment first, then a secret store).
func Chain(lookups ...Lookup) Lookup {
	return func(name string) (string, bool) {
		for _, l := range lookups {
			if v, ok := l(name); ok {
				return v, ok
			}
		}
		return "", false
	}
}

// Loader reads declared variables and collects problems.
type Loader struct {
	lookup Lookup
	vars   map[string]Var
	errs   []error
	used   map[string]string // name -> name actually set (alias or itself)
}

// NewLoader returns a loader over the declared vars. Later declarations of
// the same name override earlier ones (a service can change a common default).
func NewLoader(lookup Lookup, vars ...[]Var) *Loader {
	l := &Loader{lookup: lookup, vars: map[string]Var{}, used: map[string]string{}}
	for _, vs := range vars {
		for _, v := range vs {
			l.vars[v.Name] = v
		}
	}
	return l
}

// Merge returns the declarations with later lists overriding earlier ones by
// name, in first-seen order.
func Merge(lists ...[]Var) []Var {
	idx := map[string]int{}
	var out []Var
	for _, vs := range lists {
		for _, v := range vs {
			if i, ok := idx[v.Name]; ok {
				out[i] = v
				continue
			}
			idx[v.Name] = len(out)
			out = append(out, v)
		}
	}
	return out
}

func (l *Loader) decl(name string) Var {
	v, ok := l.vars[name]
	if !ok {
		panic("config: variable " + name + " read but not declared")
	}
	return v
}

// raw returns the value set for name (or an alias) and whether it was set.
func (l *Loader) raw(name string) (string, bool) {
	v := l.decl(name)
	for _, n := range append([]string{name}, v.Aliases...) {
		if s, ok := l.lookup(n); ok {
			l.used[name] = n
			if v.Multiline {
				s = strings.ReplaceAll(s, `\n`, "\n")
			}
			return s, true
		}
	}
	return "", false
}

// IsSet reports whether name (or one of its aliases) was given.
func (l *Loader) IsSet(name string) bool {
	_, ok := l.raw(name)
	return ok
}

// SetName returns the name under which name's value was found (an alias or
// name itself), for messages; name when it was not set.
func (l *Loader) SetName(name string) string {
	if n, ok := l.used[name]; ok {
		return n
	}
	return name
}

// Used lists the declared variables that were read from the lookup, sorted.
func (l *Loader) Used() []string {
	out := make([]string, 0, len(l.used))
	for n := range l.used {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Fail records a problem with name's value.
func (l *Loader) Fail(name, value, allowed string) {
	l.errs = append(l.errs, &Error{Name: l.SetName(name), Value: value, Secret: l.decl(name).Secret, Allowed: allowed})
}

// Require records that name must be set (with why, e.g. "required unless X is set").
func (l *Loader) Require(name, why string) {
	l.errs = append(l.errs, &Error{Name: name, Missing: true, Allowed: why})
}

// Err joins every problem found so far (nil if none).
func (l *Loader) Err() error { return errors.Join(l.errs...) }

// String returns the value or the default; records a missing required one.
func (l *Loader) String(name string) string {
	s, ok := l.raw(name)
	if !ok {
		d := l.decl(name)
		if d.Required {
			l.Require(name, "required: "+d.Doc)
		}
		return d.Default
	}
	return s
}

// Optional returns the value, or "" when unset (ignoring Required).
func (l *Loader) Optional(name string) string {
	s, _ := l.raw(name)
	return s
}

// Int parses an integer within [min, max].
func (l *Loader) Int(name string, min, max int) int {
	s := l.String(name)
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < min || n > max {
		l.Fail(name, s, fmt.Sprintf("an integer from %d to %d", min, max))
		return defaultInt(l.decl(name).Default)
	}
	return n
}

func defaultInt(s string) int { n, _ := strconv.Atoi(s); return n }

// Duration parses a Go duration ("500ms", "1m30s") within [min, max].
func (l *Loader) Duration(name string, min, max time.Duration) time.Duration {
	s := l.String(name)
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < min || d > max {
		l.Fail(name, s, fmt.Sprintf("a duration such as 500ms, 30s or 5m, from %s to %s", min, max))
		d, _ = time.ParseDuration(l.decl(name).Default)
		return d
	}
	return d
}

// Bytes parses a size ("262144", "256KiB", "64MiB", "1GiB", "10MB") within [min, max].
func (l *Loader) Bytes(name string, min, max int64) int64 {
	s := l.String(name)
	if s == "" {
		return 0
	}
	n, err := ParseBytes(s)
	if err != nil || n < min || n > max {
		l.Fail(name, s, fmt.Sprintf("a size such as 262144, 256KiB or 64MiB, from %s to %s", FormatBytes(min), FormatBytes(max)))
		n, _ = ParseBytes(l.decl(name).Default)
		return n
	}
	return n
}

// Bool parses true/false (also 1/0, yes/no, on/off).
func (l *Loader) Bool(name string) bool {
	s := l.String(name)
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "yes", "on":
		return true
	case "false", "0", "no", "off", "":
		return false
	}
	l.Fail(name, s, "true or false")
	return false
}

// Enum returns the value if it is one of allowed (case-insensitive, returned lower-case).
func (l *Loader) Enum(name string, allowed ...string) string {
	s := l.String(name)
	low := strings.ToLower(strings.TrimSpace(s))
	for _, a := range allowed {
		if low == a {
			return a
		}
	}
	l.Fail(name, s, "one of "+strings.Join(allowed, ", "))
	return strings.ToLower(l.decl(name).Default)
}

// URL parses a URL whose scheme is one of schemes.
func (l *Loader) URL(name string, schemes ...string) *url.URL {
	s := l.String(name)
	if s == "" {
		return nil
	}
	u, err := url.Parse(strings.TrimSpace(s))
	ok := err == nil && u.Host != ""
	if ok {
		ok = false
		for _, sc := range schemes {
			if strings.EqualFold(u.Scheme, sc) {
				ok = true
			}
		}
	}
	if !ok {
		l.Fail(name, s, "a URL such as "+schemes[0]+"://host:port with scheme "+strings.Join(schemes, ", "))
		return nil
	}
	u.Scheme = strings.ToLower(u.Scheme)
	return u
}

// Error is one configuration problem.
type Error struct {
	Name    string
	Value   string
	Secret  bool
	Missing bool
	Allowed string
}

func (e *Error) Error() string {
	if e.Missing {
		return fmt.Sprintf("%s is not set: %s", e.Name, e.Allowed)
	}
	v := strconv.Quote(e.Value)
	if e.Secret {
		v = "(secret value not shown)"
	}
	return fmt.Sprintf("%s=%s is invalid: want %s", e.Name, v, e.Allowed)
}

var units = []struct {
	suffix string
	mult   int64
}{
	{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseBytes parses a byte size with an optional unit.
func ParseBytes(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// FormatBytes prints n with the largest binary unit that divides it.
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return strconv.FormatInt(n, 10)
}
