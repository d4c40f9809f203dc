//! Path globs for chmod rules and wildcard patterns for namespace names.
//!
//! A path glob is an absolute path whose components may hold `*` (any run of characters
//! within one component) and `?` (one character within a component); a component that is
//! exactly `**` matches zero or more whole components. Nothing else is special: character
//! classes, alternatives and escapes are refused rather than taken literally.

use std::fmt;

/// Longest accepted pattern, in bytes (`PATH_MAX` less the NUL).
pub const MAX_GLOB_BYTES: usize = 4095;

/// A validated absolute path glob.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.pattern)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl Glob {
    /// Validates a pattern; the error says what is wrong with it.
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("empty path pattern".into());
        }
        if pattern.len() > MAX_GLOB_BYTES {
            return Err(format!(
                "path pattern is {} bytes long; at most {MAX_GLOB_BYTES}",
                pattern.len()
            ));
        }
        if !pattern.starts_with('/') {
            return Err(format!(
                "'{pattern}': path patterns are absolute (start with '/')"
            ));
        }
        if pattern == "/" {
            return Err("'/': matches only the root directory; use '/**' for every file".into());
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\' | '\0'))
        {
            return Err(format!(
                "'{pattern}': '{}' is not supported (only '*', '?' and '**' are special)",
                c.escape_default()
            ));
        }
        for component in pattern[1..].split('/') {
            match component {
                "" if pattern.ends_with('/') => {
                    return Err(format!(
                        "'{pattern}': trailing '/'; write '{}/**' for everything below it",
                        pattern.trim_end_matches('/')
                    ));
                }
                "" => return Err(format!("'{pattern}': empty path component ('//')")),
                "." | ".." => {
                    return Err(format!(
                        "'{pattern}': '{component}' components are not allowed (names are resolved)"
                    ));
                }
                "**" => {}
                c if c.contains("**") => {
                    return Err(format!(
                        "'{pattern}': '**' must be a whole path component ('/**/')"
                    ));
                }
                _ => {}
            }
        }
        Ok(Self {
            pattern: pattern.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The leading components without wildcards (`/usr/` for `/usr/*/bin`): every matching
    /// name starts with it, which lets a matcher skip most names cheaply.
    pub fn literal_prefix(&self) -> &str {
        let first_wild = self.pattern.find(['*', '?']).unwrap_or(self.pattern.len());
        let end = self.pattern[..first_wild].rfind('/').map_or(0, |i| i + 1);
        if first_wild == self.pattern.len() {
            &self.pattern
        } else {
            &self.pattern[..end]
        }
    }

    /// Whether an absolute file name matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let pattern: Vec<&str> = self.pattern[1..].split('/').collect();
        let names: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
        // reachable[j]: the pattern components so far can consume exactly names[..j].
        let mut reachable = vec![false; names.len() + 1];
        reachable[0] = true;
        for p in pattern {
            let mut next = vec![false; names.len() + 1];
            if p == "**" {
                let mut any = false;
                for (j, slot) in next.iter_mut().enumerate() {
                    any |= reachable[j];
                    *slot = any;
                }
            } else {
                for j in 0..names.len() {
                    if reachable[j] && wildcard_match(p, names[j]) {
                        next[j + 1] = true;
                    }
                }
            }
            reachable = next;
        }
        reachable[names.len()]
    }
}

/// `*` matches any run of characters, `?` one character; everything else is literal.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last '*' was, and how much text it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_says_what_is_wrong() {
        assert!(Glob::new("/usr/**").is_ok());
        assert!(Glob::new("/home/*/bin/?ash").is_ok());
        for (bad, fragment) in [
            ("", "empty"),
            ("usr/**", "absolute"),
            ("/usr/", "trailing '/'"),
            ("/usr//bin", "empty path component"),
            ("/usr/../etc", "'..' components"),
            ("/usr/**bin", "whole path component"),
            ("/usr/[ab]", "'[' is not supported"),
            ("/etc/{a,b}", "'{' is not supported"),
            ("/", "root directory"),
        ] {
            let err = Glob::new(bad).unwrap_err();
            assert!(err.contains(fragment), "{bad}: {err}");
        }
        assert!(Glob::new(&format!("/{}", "a".repeat(MAX_GLOB_BYTES))).is_err());
    }

    #[test]
    fn matching() {
        let g = |p: &str| Glob::new(p).unwrap();
        assert!(g("/usr/**").matches("/usr/bin/su"));
        assert!(g("/usr/**").matches("/usr"));
        assert!(!g("/usr/**").matches("/usrx/bin"));
        assert!(!g("/usr/**").matches("/etc/passwd"));
        assert!(g("/usr/*/su").matches("/usr/bin/su"));
        assert!(!g("/usr/*/su").matches("/usr/local/bin/su"));
        assert!(g("/usr/**/su").matches("/usr/local/bin/su"));
        assert!(g("/usr/**/su").matches("/usr/su"));
        assert!(g("/tmp/*.sh").matches("/tmp/run.sh"));
        assert!(!g("/tmp/*.sh").matches("/tmp/a/run.sh"));
        assert!(g("/bin/?u").matches("/bin/su"));
        assert!(!g("/bin/?u").matches("/bin/sudo"));
        assert!(g("/etc/shadow").matches("/etc/shadow"));
        assert!(!g("/etc/shadow").matches("etc/shadow"));
        assert!(g("/**").matches("/anything/at/all"));
        assert_eq!(g("/usr/*/bin").literal_prefix(), "/usr/");
        assert_eq!(g("/etc/shadow").literal_prefix(), "/etc/shadow");
        assert_eq!(g("/**").literal_prefix(), "/");
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("team-*", "team-a"));
        assert!(!wildcard_match("team-*", "teams"));
        assert!(wildcard_match("*-system", "kube-system"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(wildcard_match("?", "x"));
        assert!(!wildcard_match("?", ""));
    }
}
