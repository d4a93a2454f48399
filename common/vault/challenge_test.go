package vault

import "testing"

// The challenge's resource is checked against the vault's domain except
// where it cannot match: a vault addressed by IP address or localhost.
func TestChallengeVerification(t *testing.T) {
	for env, want := range map[[2]string]bool{
		{VarName, "vault1"}:                        true,
		{VarURL, "https://vault1.vault.azure.cn/"}: true,
		{VarURL, "https://127.0.0.1:8443/"}:        false,
		{VarURL, "https://[::1]:8443/"}:            false,
		{VarURL, "https://localhost:8443/"}:        false,
	} {
		c, err := LoadConfig(func(n string) (string, bool) {
			if n == env[0] {
				return env[1], true
			}
			return "", false
		})
		if err != nil || c == nil {
			t.Fatalf("%v: %v", env, err)
		}
		if c.verifyChallenge != want {
			t.Errorf("%s=%s: verify %v, want %v", env[0], env[1], c.verifyChallenge, want)
		}
	}
}
