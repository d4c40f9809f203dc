use std::{collections::BTreeMap, path::PathBuf};

use super::*;

const EXAMPLES: [(&str, &str); 4] = [
    (
        "audit-rollout.yaml",
        include_str!("../../sensor/policies/examples/audit-rollout.yaml"),
    ),
    (
        "namespace-exemption.yaml",
        include_str!("../../sensor/policies/examples/namespace-exemption.yaml"),
    ),
    (
        "prevent-chmod.yaml",
        include_str!("../../sensor/policies/examples/prevent-chmod.yaml"),
    ),
    (
        "host-cgroups.yaml",
        include_str!("../../sensor/policies/examples/host-cgroups.yaml"),
    ),
];

const DOCS: &str = include_str!("../../docs/policy.md");

/// A valid policy; the bad files below are this with one or more lines changed.
/// Lines: 1 apiVersion, 4 metadata.name, 6 scope, 8 include, 10-13 the first rule.
const GOOD: &str = "\
apiVersion: sensor/v1
kind: Policy
metadata:
  name: test
spec:
  scope:
    namespaces:
      include: [\"*\"]
  rules:
    - name: block-metadata
      type: metadata
      action: enforce
      destinations: [default]
";

fn errors(text: &str) -> Vec<String> {
    match parse("bad.yaml", text) {
        Ok(p) => panic!("parsed, expected errors: {p:?}\n{text}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Exactly one error, at `line:column`, whose message contains `fragment`.
#[track_caller]
fn assert_error(text: &str, line: usize, column: usize, fragment: &str) {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let prefix = format!("bad.yaml:{line}:{column}: ");
    assert!(
        errors[0].starts_with(&prefix) && errors[0].contains(fragment),
        "expected {prefix}...{fragment}..., got {}",
        errors[0]
    );
}

/// `GOOD` with line `n` (1-based) replaced by `lines` (which may be several lines).
fn with_line(n: usize, lines: &str) -> String {
    let mut out: Vec<&str> = GOOD.lines().collect();
    out[n - 1] = lines;
    out.join("\n") + "\n"
}

/// `GOOD` with `extra` appended (more rules).
fn with_rules(extra: &str) -> String {
    format!("{GOOD}{extra}")
}

#[test]
fn the_good_base_parses() {
    let p = parse("good.yaml", GOOD).unwrap();
    assert_eq!(p.name, "test");
    assert_eq!(p.rules.len(), 1);
}

#[test]
fn default_policy_is_the_documented_one() {
    let p = default_policy();
    assert_eq!(p.name, "default");
    let ns = p.scope.namespaces.as_ref().unwrap();
    assert!(ns.matches("default") && ns.matches("team-a"));
    assert!(!ns.matches("kube-system"));
    assert_eq!(p.scope.pod_selector, None);
    assert!(p.scope.cgroups.is_empty());
    assert_eq!(p.rules.len(), 3);
    assert_eq!(p.rules[0].action, Action::Enforce);
    assert_eq!(
        p.rules[0].kind,
        RuleKind::Metadata(MetadataRule {
            destinations: vec![DestinationSpec::Default],
            ports: vec![]
        })
    );
    assert_eq!(p.rules[1].action, Action::Enforce);
    let RuleKind::Chmod(chmod) = &p.rules[1].kind else {
        panic!("rule 1 is not a chmod rule")
    };
    assert_eq!(chmod.mode_bits(), Some(SETID_BITS));
    assert!(chmod.matches(0o4755, Some("/usr/bin/x")));
    assert!(chmod.matches(0o2755, None));
    assert!(!chmod.matches(0o755, Some("/usr/bin/x")));
    // Every privilege raise, logged (audit) by default.
    assert_eq!(p.rules[2].action, Action::Audit);
    let RuleKind::Privilege(privilege) = &p.rules[2].kind else {
        panic!("rule 2 is not a privilege rule")
    };
    assert_eq!(privilege.raises, Raise::ALL);
}

#[test]
fn compiling_the_default_gives_the_seven_built_in_destinations() {
    let c = compile(&default_policy());
    assert_eq!(c.policy, "default");
    assert_eq!(
        c.rule_names,
        ["block-metadata", "deny-setid-chmod", "log-privilege-raises"]
    );
    let v4: Vec<String> = c.cidr_v4.iter().map(|r| r.prefix.to_string()).collect();
    let v6: Vec<String> = c.cidr_v6.iter().map(|r| r.prefix.to_string()).collect();
    assert_eq!(
        v4,
        [
            "169.254.169.254/32",
            "169.254.170.2/32",
            "169.254.170.23/32",
            "100.100.100.200/32",
            "168.63.129.16/32"
        ]
    );
    assert_eq!(v6, ["fd00:ec2::254/128", "fd00:ec2::23/128"]);
    for r in c.cidr_v4.iter().chain(&c.cidr_v6) {
        assert_eq!((r.rule, r.action), (0, Action::Enforce));
        assert!(r.ports.is_empty());
    }
    assert_eq!(c.cidr_v4[0].destination, "metadata-imds-v4");
    assert_eq!(c.cidr_v6[1].destination, "metadata-pod-identity-v6");
    assert_eq!(
        c.chmod,
        [ChmodEntry {
            rule: 1,
            action: Action::Enforce,
            match_all: false,
            mode_bits: 0o6000,
            paths: vec![],
        }]
    );
    assert_eq!(c.privilege.len(), 1);
    assert_eq!(
        (
            c.privilege[0].rule,
            c.privilege[0].action,
            c.privilege[0].raises
        ),
        (2, Action::Audit, 0b1_1111)
    );
    let ns = c.scope.namespaces.unwrap();
    assert_eq!(
        (ns.include, ns.exclude),
        (vec!["*".into()], vec!["kube-system".into()])
    );
}

#[test]
fn every_example_parses() {
    for (name, text) in EXAMPLES {
        if let Err(errors) = parse(name, text) {
            panic!("{name}: {errors:#?}");
        }
    }
}

#[test]
fn examples_mean_what_they_say() {
    let p = |i: usize| parse(EXAMPLES[i].0, EXAMPLES[i].1).unwrap();

    let audit = p(0);
    assert!(audit.rules.iter().all(|r| r.action == Action::Audit));
    let c = compile(&audit);
    assert_eq!(c.privilege.len(), 1);
    assert_eq!(c.privilege[0].raises, 0b11111);

    let exempt = p(1);
    let ns = exempt.scope.namespaces.as_ref().unwrap();
    assert!(!ns.matches("platform-logging") && !ns.matches("monitoring") && ns.matches("shop"));
    let selector = exempt.scope.pod_selector.as_ref().unwrap();
    let mut labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    assert!(selector.matches(&labels));
    labels.insert("sensor.example.com/exempt".into(), "true".into());
    assert!(!selector.matches(&labels));

    let c = compile(&p(2));
    assert_eq!(c.chmod.len(), 1);
    assert!(c.chmod[0].match_all);
    assert_eq!(c.chmod[0].mode_bits, 0);

    let host = p(3);
    assert!(host.scope.namespaces.is_none());
    assert_eq!(
        host.scope.cgroups,
        [
            PathBuf::from("/sys/fs/cgroup/unified/my-workloads"),
            PathBuf::from("/sys/fs/cgroup/system.slice/containerd.service")
        ]
    );
    let c = compile(&host);
    assert_eq!(c.cidr_v4.len(), 6);
    assert_eq!(c.cidr_v6.len(), 3);
    let vault = c
        .cidr_v4
        .iter()
        .find(|r| r.prefix.to_string() == "10.20.0.0/16")
        .unwrap();
    assert_eq!(
        (vault.rule, vault.action, vault.ports.as_slice()),
        (1, Action::Audit, &[80, 443][..])
    );
    assert_eq!(vault.destination, "audit-vault");
    assert_eq!(c.chmod[0].paths[0].as_str(), "/usr/**");
    assert_eq!(c.chmod[1].mode_bits, 0o111);
}

/// Every complete policy shown in docs/policy.md parses (so the documentation cannot drift),
/// and the default policy shown there is the built-in one.
/// The YAML code blocks of docs/policy.md.
fn docs_yaml_blocks() -> Vec<&'static str> {
    let mut blocks = Vec::new();
    let mut rest = DOCS;
    while let Some(start) = rest.find("```yaml\n") {
        rest = &rest[start + "```yaml\n".len()..];
        let end = rest
            .find("```")
            .expect("unclosed code block in docs/policy.md");
        blocks.push(&rest[..end]);
        rest = &rest[end + 3..];
    }
    blocks
}

#[test]
fn policies_in_the_docs_parse() {
    let policies: Vec<&str> = docs_yaml_blocks()
        .into_iter()
        .filter(|b| b.contains("apiVersion: sensor/v1"))
        .collect();
    assert!(policies.len() >= 3, "found {} policies", policies.len());
    for (i, text) in policies.iter().enumerate() {
        if let Err(errors) = parse(&format!("docs/policy.md block {i}"), text) {
            panic!("{errors:#?}\n{text}");
        }
    }
    assert!(
        policies.contains(&DEFAULT_POLICY_YAML),
        "docs/policy.md must show default.yaml verbatim"
    );
}

#[test]
fn syntax_error() {
    assert_error(
        &with_line(13, "      destinations: [default"),
        13,
        21,
        "YAML syntax error: unclosed bracket '['",
    );
    assert_error("a: b\n c: d\n", 2, 3, "YAML syntax error");
}

#[test]
fn unknown_field() {
    assert_error(
        &with_line(4, "  name: test\n  labels: {a: b}"),
        5,
        3,
        "metadata: unknown field 'labels' (expected name or description)",
    );
    assert_error(
        &with_line(7, "    namespace:"),
        7,
        5,
        "spec.scope: unknown field 'namespace' (expected namespaces, podSelector or cgroups)",
    );
    assert_error(
        &with_line(12, "      action: enforce\n      comment: hi"),
        13,
        7,
        "spec.rules[0]: unknown field 'comment' of a metadata rule",
    );
}

#[test]
fn bad_cidrs() {
    assert_error(
        &with_line(13, "      destinations: [default, 10.0.0.1/8]"),
        13,
        31,
        "spec.rules[0].destinations[1]: '10.0.0.1/8': host bits set",
    );
    assert_error(
        &with_line(13, "      destinations:\n        - fd00::/129"),
        14,
        11,
        "prefix length must be",
    );
    assert_error(
        &with_line(13, "      destinations: [metadata]"),
        13,
        22,
        "'metadata': not an IP address or CIDR prefix (give 'default'",
    );
}

#[test]
fn empty_scope() {
    assert_error(
        &with_line(6, "  scope: {}").replace("    namespaces:\n      include: [\"*\"]\n", ""),
        6,
        10,
        "spec.scope: the scope selects nothing",
    );
    assert_error(
        &with_line(8, "      include: []"),
        8,
        16,
        "spec.scope.namespaces.include: empty list",
    );
}

#[test]
fn duplicate_rule_names() {
    let text = with_rules(
        "    - name: block-metadata\n      type: chmod\n      action: audit\n      setid: true\n",
    );
    assert_error(
        &text,
        14,
        13,
        "spec.rules[1].name: duplicate rule name 'block-metadata' (first at line 10)",
    );
}

#[test]
fn wrong_types() {
    assert_error(
        &with_line(13, "      destinations: default"),
        13,
        21,
        "expected a list, found a string (write [default])",
    );
    assert_error(
        &with_line(8, "      include: \"*\""),
        8,
        16,
        "expected a list, found a string (write [\"*\"])",
    );
    assert_error(
        &with_line(4, "  name: 42"),
        4,
        9,
        "metadata.name: expected a string, found an integer (quote it: \"42\")",
    );
    let chmod = "    - name: c\n      type: chmod\n      action: audit\n      setid: yes\n";
    assert_error(
        &with_rules(chmod),
        17,
        14,
        "spec.rules[1].setid: expected true or false, found a string (YAML 1.2 booleans",
    );
    assert_error(
        &with_line(3, "metadata: [name, test]").replace("  name: test\n", ""),
        3,
        11,
        "metadata: expected a mapping, found a list",
    );
}

#[test]
fn bad_action_and_type() {
    assert_error(
        &with_line(12, "      action: block"),
        12,
        15,
        "spec.rules[0].action: unknown action 'block' (expected enforce or audit)",
    );
    assert_error(
        &with_line(11, "      type: network"),
        11,
        13,
        "unknown rule type 'network' (expected metadata, chmod or privilege)",
    );
}

#[test]
fn fields_of_another_rule_type() {
    let text = with_rules(
        "    - name: c\n      type: chmod\n      action: audit\n      setid: true\n      ports: [80]\n",
    );
    assert_error(
        &text,
        18,
        7,
        "spec.rules[1]: 'ports' is a field of metadata rules, not of chmod rules",
    );
    assert_error(
        &with_line(13, "      destinations: [default]\n      raises: [capset]"),
        14,
        7,
        "'raises' is a field of privilege rules, not of metadata rules",
    );
}

#[test]
fn bad_ports() {
    assert_error(
        &with_line(
            13,
            "      destinations: [default]\n      ports: [80, 70000]",
        ),
        14,
        19,
        "spec.rules[0].ports[1]: port 70000 out of range (1 to 65535)",
    );
    assert_error(
        &with_line(13, "      destinations: [default]\n      ports: [0]"),
        14,
        15,
        "port 0 out of range",
    );
    assert_error(
        &with_line(13, "      destinations: [default]\n      ports: [\"443\"]"),
        14,
        15,
        "expected a port number, found a string",
    );
    assert_error(
        &with_line(13, "      destinations: [default]\n      ports: [443, 443]"),
        14,
        20,
        "duplicate port 443 (first at line 14)",
    );
    let seventeen: Vec<String> = (1..=17).map(|p| p.to_string()).collect();
    assert_error(
        &with_line(
            13,
            &format!(
                "      destinations: [default]\n      ports: [{}]",
                seventeen.join(", ")
            ),
        ),
        14,
        70,
        "spec.rules[0].ports[16]: at most 16 ports per rule",
    );
}

#[test]
fn three_errors_are_all_reported_in_order() {
    let text = GOOD
        .replace("  name: test\n", "  name: test\n  owner: me\n")
        .replace("action: enforce", "action: deny")
        .replace(
            "destinations: [default]",
            "destinations: [default]\n      ports: [-1]",
        );
    let errors = errors(&text);
    assert_eq!(
        errors,
        [
            "bad.yaml:5:3: metadata: unknown field 'owner' (expected name or description)",
            "bad.yaml:13:15: spec.rules[0].action: unknown action 'deny' (expected enforce or audit)",
            "bad.yaml:15:15: spec.rules[0].ports[0]: port -1 out of range (1 to 65535)",
        ]
    );
}

#[test]
fn more_bad_files() {
    // Missing field: reported at the mapping that lacks it.
    assert_error(
        &with_line(13, ""),
        10,
        7,
        "spec.rules[0]: missing field 'destinations'",
    );
    // Empty destination list.
    assert_error(
        &with_line(13, "      destinations: []"),
        13,
        21,
        "spec.rules[0].destinations: empty list",
    );
    // The same destination in two rules.
    assert_error(
        &with_rules(
            "    - name: again\n      type: metadata\n      action: audit\n      destinations: [169.254.169.254]\n",
        ),
        17,
        22,
        "169.254.169.254/32 is already listed by rule 'block-metadata' (line 13)",
    );
    // Duplicate key.
    assert_error(
        &with_line(2, "kind: Policy\nkind: Policy"),
        3,
        1,
        "duplicate key 'kind' (first at line 2)",
    );
    // Wrong apiVersion and kind.
    assert_error(
        &with_line(1, "apiVersion: sensor/v2"),
        1,
        13,
        "unsupported apiVersion 'sensor/v2' (this sensor reads sensor/v1 policy files and sensor.dev/v1 resources)",
    );
    assert_error(
        &with_line(2, "kind: ConfigMap"),
        2,
        7,
        "kind: expected Policy, found 'ConfigMap'",
    );
    // Bad names and namespaces.
    assert_error(
        &with_line(4, "  name: Test_1"),
        4,
        9,
        "'Test_1': not a valid name",
    );
    assert_error(
        &with_line(8, "      include: [Kube-System]"),
        8,
        17,
        "not a namespace name or pattern",
    );
    // podSelector without namespaces, and an empty one.
    assert_error(
        &with_line(
            7,
            "    cgroups: [/sys/fs/cgroup/x]\n    podSelector: {matchLabels: {app: web}}",
        )
        .replace("      include: [\"*\"]\n", ""),
        8,
        5,
        "podSelector needs namespaces",
    );
    assert_error(
        &with_line(8, "      include: [\"*\"]\n    podSelector: {}"),
        9,
        18,
        "an empty selector selects every pod",
    );
    assert_error(
        &with_line(
            8,
            "      include: [\"*\"]\n    podSelector:\n      matchExpressions:\n        - {key: tier, operator: In}",
        ),
        11,
        11,
        "In and NotIn need at least one value",
    );
    assert_error(
        &with_line(
            8,
            "      include: [\"*\"]\n    podSelector: {matchLabels: {app: \"a b\"}}",
        ),
        9,
        38,
        "not a valid label value",
    );
    // Bad cgroup path.
    assert_error(
        &with_line(7, "    cgroups: [sys/fs/cgroup]").replace("      include: [\"*\"]\n", ""),
        7,
        15,
        "'sys/fs/cgroup': cgroup paths are absolute",
    );
    // An empty file, and aliases.
    assert_error("", 1, 1, "the file holds no policy");
    assert_error(
        &with_line(4, "  name: &n test\n  description: *n"),
        5,
        16,
        "YAML aliases are not supported",
    );
    // Not a mapping at all.
    assert_error("- a\n- b\n", 1, 1, "expected a mapping, found a list");
}

#[test]
fn bad_chmod_rules() {
    let chmod = |fields: &str| {
        with_rules(&format!(
            "    - name: c\n      type: chmod\n      action: enforce\n{fields}"
        ))
    };
    // Bad globs.
    assert_error(
        &chmod("      setid: true\n      paths: [\"usr/**\"]\n"),
        18,
        15,
        "spec.rules[1].paths[0]: 'usr/**': path patterns are absolute",
    );
    assert_error(
        &chmod("      setid: true\n      paths: [\"/usr/**bin\"]\n"),
        18,
        15,
        "'**' must be a whole path component",
    );
    assert_error(
        &chmod("      setid: true\n      paths: [\"/etc/[ab]\"]\n"),
        18,
        15,
        "'[' is not supported",
    );
    // Matches nothing; all with setid; mode masks.
    assert_error(
        &chmod("      setid: false\n"),
        14,
        7,
        "the chmod rule matches nothing",
    );
    assert_error(
        &chmod("      setid: true\n      all: true\n"),
        18,
        12,
        "all: true matches every chmod; remove setid and modeMask",
    );
    assert_error(
        &chmod("      modeMask: 111\n"),
        17,
        17,
        "write the mode as an octal string like \"0o111\"",
    );
    assert_error(
        &chmod("      modeMask: \"0o8\"\n"),
        17,
        17,
        "not an octal mode of at most 4 digits",
    );
    assert_error(
        &chmod("      modeMask: \"0\"\n"),
        17,
        17,
        "mode mask 0 matches nothing",
    );
    // Accepted spellings of the mask.
    for mask in ["0o111", "\"0o111\"", "'111'", "\"0111\""] {
        let p = parse("m.yaml", &chmod(&format!("      modeMask: {mask}\n"))).unwrap();
        let RuleKind::Chmod(c) = &p.rules[1].kind else {
            panic!()
        };
        assert_eq!(c.mode_mask, Some(0o111), "{mask}");
    }
}

#[test]
fn bad_privilege_rules() {
    let text = with_rules(
        "    - name: p\n      type: privilege\n      action: audit\n      raises: [capset, sudo, capset]\n",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].starts_with("bad.yaml:17:24: spec.rules[1].raises[1]: unknown raise 'sudo'"));
    assert!(errors[1].starts_with("bad.yaml:17:30: spec.rules[1].raises[2]: duplicate 'capset'"));
}

#[test]
fn check_files_reports_every_file() {
    let dir = std::env::temp_dir().join(format!("sensor-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    let bad = dir.join("bad.yaml");
    let binary = dir.join("binary.yaml");
    std::fs::write(&good, GOOD).unwrap();
    std::fs::write(&bad, with_line(12, "      action: block")).unwrap();
    std::fs::write(&binary, b"apiVersion: sensor/v1\nkind: \xff\n").unwrap();
    let missing = dir.join("missing.yaml");
    let errors = check_files(&[good.clone(), bad.clone(), missing.clone(), binary.clone()]);
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_eq!(errors[0].file, bad.display().to_string());
    assert_eq!((errors[0].line, errors[0].column), (12, 15));
    assert_eq!(errors[1].file, missing.display().to_string());
    assert_eq!((errors[1].line, errors[1].column), (0, 0));
    assert!(errors[1].message.starts_with("cannot read the file"));
    assert_eq!((errors[2].line, errors[2].column), (2, 7));
    assert_eq!(errors[2].message, "not UTF-8 text");
    assert!(parse_file(&good).is_err(), "the directory is gone");
}

/// The error example in docs/policy.md is what the parser says.
#[test]
fn the_documented_error_example_is_exact() {
    let start = DOCS.find("For example this file").unwrap();
    let mut blocks = DOCS[start..].split("```text\n").skip(1);
    let numbered = blocks.next().unwrap().split("```").next().unwrap();
    let expected = blocks.next().unwrap().split("```").next().unwrap();
    let text: String = numbered.lines().map(|l| format!("{}\n", &l[4..])).collect();
    let got: Vec<String> = parse("p.yaml", &text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, expected.lines().collect::<Vec<_>>());
}

#[test]
fn error_display_is_file_line_column_message() {
    let e = PolicyError {
        file: "p.yaml".into(),
        line: 3,
        column: 7,
        message: "what is wrong".into(),
    };
    assert_eq!(e.to_string(), "p.yaml:3:7: what is wrong");
}

#[test]
fn at_most_sixteen_chmod_rules() {
    let rule = |i: usize| {
        format!("    - name: c{i}\n      type: chmod\n      action: audit\n      setid: true\n")
    };
    let sixteen: String = (0..16).map(rule).collect();
    let base = "apiVersion: sensor/v1\nkind: Policy\nmetadata: {name: many}\nspec:\n  scope:\n    cgroups: [/sys/fs/cgroup/x]\n  rules:\n";
    assert!(parse("ok.yaml", &format!("{base}{sixteen}")).is_ok());
    let errs = parse("bad.yaml", &format!("{base}{sixteen}{}", rule(16))).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        errs[0].to_string(),
        "bad.yaml:72:7: spec.rules[16]: at most 16 chmod rules per policy"
    );
}

#[test]
fn line_ends_are_lf_or_crlf() {
    let crlf = GOOD.replace('\n', "\r\n");
    assert!(parse("crlf.yaml", &crlf).is_ok(), "CRLF files parse");
    let lone = with_line(3, "metadata:\r ");
    assert_error(
        &lone,
        3,
        10,
        "a carriage return (\\r) not followed by a newline",
    );
}

#[test]
fn oversized_files_are_refused() {
    let text = format!("{GOOD}#{}\n", "x".repeat(MAX_POLICY_BYTES));
    assert_error(&text, 1, 1, "a policy file is at most");
}

/// xorshift64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_default_never_panics() {
    const INTERESTING: &[u8] = b":-[]{},\"'&*!|>#%@ \n\t0/.\xff";
    let base = DEFAULT_POLICY_YAML.as_bytes();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..2000 {
        let mut bytes = base.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len().max(1));
            match rng.below(5) {
                0 => bytes[at] = rng.next() as u8,
                1 => bytes.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
                2 => {
                    bytes.remove(at);
                }
                3 => {
                    let len = rng.below(32).min(bytes.len() - at);
                    let chunk = bytes[at..at + len].to_vec();
                    let to = rng.below(bytes.len());
                    bytes.splice(to..to, chunk);
                }
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                break;
            }
        }
        fuzz_parse(&bytes);
        match parse("m.yaml", &String::from_utf8_lossy(&bytes)) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    // Both outcomes occur, so the loop exercises the validator and not only the YAML parser.
    assert!(ok > 50 && err > 50, "ok {ok}, err {err}");
}

// The resources: `SensorClusterPolicy` and `SensorPolicy` (apiVersion sensor.dev/v1).

/// `GOOD` as a resource of `kind`: the same lines, the same numbers.
fn resource(kind: &str) -> String {
    GOOD.replacen(
        "apiVersion: sensor/v1\nkind: Policy",
        &format!("apiVersion: sensor.dev/v1\nkind: {kind}"),
        1,
    )
}

/// `text` with line `n` (1-based) replaced by `lines` (which may be several lines).
fn line_replaced(text: &str, n: usize, lines: &str) -> String {
    let mut out: Vec<&str> = text.lines().collect();
    out[n - 1] = lines;
    out.join("\n") + "\n"
}

/// A `SensorPolicy` without a scope; line 4 is `name`, 5 `namespace`, 6 `spec`, 7 `rules`.
const NAMESPACED: &str = "\
apiVersion: sensor.dev/v1
kind: SensorPolicy
metadata:
  name: test
  namespace: prod
spec:
  rules:
    - name: block-metadata
      type: metadata
      action: enforce
      destinations: [default]
";

#[test]
fn the_resource_constants_are_the_contract() {
    assert_eq!((RESOURCE_GROUP, RESOURCE_VERSION), ("sensor.dev", "v1"));
    assert_eq!(
        (CLUSTER_KIND, CLUSTER_PLURAL),
        ("SensorClusterPolicy", "sensorclusterpolicies")
    );
    assert_eq!(
        (NAMESPACED_KIND, NAMESPACED_PLURAL),
        ("SensorPolicy", "sensorpolicies")
    );
}

#[test]
fn a_policy_file_is_of_the_file_form() {
    assert_eq!(parse("good.yaml", GOOD).unwrap().form, PolicyForm::File);
    assert_eq!(default_policy().form, PolicyForm::File);
}

#[test]
fn a_cluster_policy_is_a_policy_file_of_another_kind() {
    let p = parse("c.yaml", &resource(CLUSTER_KIND)).unwrap();
    let file = parse("good.yaml", GOOD).unwrap();
    assert_eq!(p.form, PolicyForm::Cluster);
    assert_eq!(
        (&p.name, &p.scope, &p.rules),
        (&file.name, &file.scope, &file.rules)
    );
    // A Kubernetes object name is a DNS subdomain: dots are fine there, not in a file.
    let dotted = line_replaced(&resource(CLUSTER_KIND), 4, "  name: metadata.v2");
    assert_eq!(parse("c.yaml", &dotted).unwrap().name, "metadata.v2");
    assert_error(
        &with_line(4, "  name: metadata.v2"),
        4,
        9,
        "'metadata.v2': not a valid name",
    );
    for (name, column) in [("a..b", 9), ("-a.b", 9), ("a.b-", 9), ("A.b", 9)] {
        assert_error(
            &line_replaced(&resource(CLUSTER_KIND), 4, &format!("  name: {name}")),
            4,
            column,
            &format!("metadata.name: '{name}': not a valid name (a DNS subdomain"),
        );
    }
    let long = format!("{}.b", "a".repeat(252));
    assert_error(
        &line_replaced(&resource(CLUSTER_KIND), 4, &format!("  name: {long}")),
        4,
        9,
        "at most 253",
    );
}

#[test]
fn a_namespaced_policy_applies_to_its_own_namespace() {
    let p = parse("n.yaml", NAMESPACED).unwrap();
    assert_eq!(
        p.form,
        PolicyForm::Namespaced {
            namespace: Some("prod".into())
        }
    );
    let ns = p.scope.namespaces.as_ref().unwrap();
    assert_eq!(
        (ns.include.as_slice(), ns.exclude.len()),
        (&["prod".to_owned()][..], 0)
    );
    assert!(ns.matches("prod") && !ns.matches("prod-2") && !ns.matches("staging"));
    assert_eq!((p.scope.pod_selector, p.scope.cgroups.len()), (None, 0));
    // Without metadata.namespace (a manifest for `kubectl apply -n`): no namespace yet.
    let p = parse("n.yaml", &line_replaced(NAMESPACED, 5, "  labels: {}")).unwrap();
    assert_eq!(p.form, PolicyForm::Namespaced { namespace: None });
    assert_eq!(p.scope.namespaces, None);
    // podSelector alone narrows it (no namespaces needed), and an empty scope is no scope.
    let selected = line_replaced(
        NAMESPACED,
        6,
        "spec:\n  scope:\n    podSelector: {matchLabels: {app: web}}",
    );
    let p = parse("n.yaml", &selected).unwrap();
    let selector = p.scope.pod_selector.unwrap();
    assert_eq!(selector.match_labels["app"], "web");
    assert_eq!(p.scope.namespaces.unwrap().include, ["prod"]);
    let empty = line_replaced(NAMESPACED, 6, "spec:\n  scope: {}");
    assert_eq!(parse("n.yaml", &empty).unwrap().scope.pod_selector, None);
    // A bad selector is reported as in a file.
    assert_error(
        &line_replaced(NAMESPACED, 6, "spec:\n  scope:\n    podSelector: {}"),
        8,
        18,
        "spec.scope.podSelector: an empty selector selects every pod",
    );
}

#[test]
fn a_namespaced_policy_cannot_widen_itself() {
    let why =
        "a SensorPolicy applies to the pods of its own namespace; use podSelector to narrow it";
    assert_error(
        &line_replaced(
            NAMESPACED,
            6,
            "spec:\n  scope:\n    namespaces:\n      include: [\"*\"]",
        ),
        8,
        5,
        &format!("spec.scope.namespaces: {why}"),
    );
    assert_error(
        &line_replaced(
            NAMESPACED,
            6,
            "spec:\n  scope:\n    cgroups: [/sys/fs/cgroup/x]",
        ),
        8,
        5,
        &format!("spec.scope.cgroups: {why}"),
    );
    // Both, beside a valid podSelector: two errors, in order.
    let both = line_replaced(
        NAMESPACED,
        6,
        "spec:\n  scope:\n    podSelector: {matchLabels: {app: web}}\n    cgroups: [/x]\n    namespaces: {include: [a]}",
    );
    let got = errors(&both);
    assert_eq!(
        got,
        [
            format!("bad.yaml:9:5: spec.scope.cgroups: {why}"),
            format!("bad.yaml:10:5: spec.scope.namespaces: {why}"),
        ]
    );
    // Anything else is an unknown field.
    assert_error(
        &line_replaced(NAMESPACED, 6, "spec:\n  scope:\n    podSelectors: {}"),
        8,
        5,
        "spec.scope: unknown field 'podSelectors' (expected podSelector)",
    );
    // The namespace is a namespace name.
    assert_error(
        &line_replaced(NAMESPACED, 5, "  namespace: Prod"),
        5,
        14,
        "metadata.namespace: 'Prod': not a valid name",
    );
    assert_error(
        &line_replaced(NAMESPACED, 5, "  namespace: 7"),
        5,
        14,
        "metadata.namespace: expected a string, found",
    );
}

#[test]
fn a_cluster_policy_has_no_namespace_and_no_cgroups() {
    assert_error(
        &line_replaced(
            &resource(CLUSTER_KIND),
            4,
            "  name: test\n  namespace: prod",
        ),
        5,
        3,
        "metadata.namespace: a SensorClusterPolicy is cluster-scoped and has no namespace",
    );
    assert_error(
        &line_replaced(
            &resource(CLUSTER_KIND),
            8,
            "      include: [\"*\"]\n    cgroups: [/sys/fs/cgroup/x]",
        ),
        9,
        5,
        "spec.scope.cgroups: cgroup roots are node configuration: a SensorClusterPolicy, written in the API, must not attach programs to host cgroups",
    );
    // The other scope rules are a file's: podSelector needs namespaces, a scope is required.
    assert_error(
        &line_replaced(
            &resource(CLUSTER_KIND),
            7,
            "    podSelector: {matchLabels: {app: web}}",
        )
        .replace("      include: [\"*\"]\n", ""),
        7,
        5,
        "spec.scope: podSelector needs namespaces",
    );
    assert_error(
        &line_replaced(&resource(CLUSTER_KIND), 6, "  scope: {}")
            .replace("    namespaces:\n      include: [\"*\"]\n", ""),
        6,
        10,
        "spec.scope: the scope selects nothing: give namespaces",
    );
    assert_error(
        &resource(CLUSTER_KIND).replace("  scope:\n    namespaces:\n      include: [\"*\"]\n", ""),
        6,
        3,
        "spec: missing field 'scope'",
    );
}

#[test]
fn resources_accept_the_api_servers_metadata_and_status() {
    let text = line_replaced(
        NAMESPACED,
        5,
        "  namespace: prod
  description: what it does
  labels: {team: a}
  annotations: {\"kubectl.kubernetes.io/last-applied-configuration\": \"{}\"}
  uid: 0b7c5a52-4f4e-4b8a-9d5e-000000000000
  resourceVersion: \"4242\"
  generation: 3
  creationTimestamp: \"2026-01-01T00:00:00Z\"
  deletionTimestamp: null
  managedFields: [{manager: kubectl, fieldsV1: {f:spec: {}}}]
  finalizers: [sensor.dev/cleanup]
  ownerReferences: []
  generateName: test-
  selfLink: /apis/sensor.dev/v1/namespaces/prod/sensorpolicies/test
  deletionGracePeriodSeconds: 0",
    ) + "status:\n  mode: enforce\n  nodes: {node-a: {accepted: true}}\n";
    let p = parse("n.yaml", &text).unwrap();
    assert_eq!(p.description.as_deref(), Some("what it does"));
    // Not in a policy file, and no other field in a resource.
    assert_error(
        &format!("{GOOD}status: {{}}\n"),
        14,
        1,
        "unknown field 'status' (expected apiVersion, kind, metadata or spec)",
    );
    assert_error(
        &format!("{NAMESPACED}statuz: {{}}\n"),
        12,
        1,
        "unknown field 'statuz' (expected apiVersion, kind, metadata, spec or status)",
    );
    assert_error(
        &line_replaced(NAMESPACED, 5, "  namespace: prod\n  owner: me"),
        6,
        3,
        "metadata: unknown field 'owner' (expected name, namespace, description, labels,",
    );
    // A resource needs its name like a file.
    assert_error(
        &line_replaced(NAMESPACED, 4, "  generateName: test-"),
        4,
        3,
        "metadata: missing field 'name'",
    );
}

#[test]
fn api_version_and_kind_must_agree() {
    // The kind decides: the file's namespaces are then refused as in a SensorPolicy.
    assert_eq!(
        errors(&GOOD.replacen("kind: Policy", "kind: SensorPolicy", 1)),
        [
            "bad.yaml:1:13: apiVersion: a SensorPolicy is a Kubernetes resource of apiVersion sensor.dev/v1 (sensor/v1 is the policy file format, kind Policy)",
            "bad.yaml:7:5: spec.scope.namespaces: a SensorPolicy applies to the pods of its own namespace; use podSelector to narrow it",
        ]
    );
    assert_error(
        &GOOD.replacen("sensor/v1", "sensor.dev/v1", 1),
        2,
        7,
        "kind: expected SensorClusterPolicy or SensorPolicy, found 'Policy' (kind Policy is a policy file, apiVersion sensor/v1)",
    );
    assert_error(
        &resource("ConfigMap"),
        2,
        7,
        "kind: expected SensorClusterPolicy or SensorPolicy, found 'ConfigMap'",
    );
    // With a wrong apiVersion, a resource kind still decides the rules the rest is read by.
    let text = line_replaced(NAMESPACED, 1, "apiVersion: sensor.dev/v2");
    assert_error(
        &text,
        1,
        13,
        "unsupported apiVersion 'sensor.dev/v2' (this sensor reads sensor/v1 policy files and sensor.dev/v1 resources)",
    );
}

/// An API object as the daemon passes it: `serde_json::to_string_pretty` of what the API
/// server returned.
fn api_object(action: &str) -> String {
    let object = serde_json::json!({
        "apiVersion": "sensor.dev/v1",
        "kind": "SensorPolicy",
        "metadata": {
            "name": "metadata",
            "namespace": "prod",
            "uid": "0b7c5a52-4f4e-4b8a-9d5e-000000000000",
            "resourceVersion": "4242",
            "generation": 2,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app.kubernetes.io/part-of": "sensor"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"sensor.dev/v1\"}\n"
            },
            "managedFields": [{
                "apiVersion": "sensor.dev/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {".": {}, "f:rules": {}}},
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "time": "2026-01-01T00:00:00Z"
            }]
        },
        "spec": {
            "scope": {"podSelector": {"matchExpressions": [
                {"key": "sensor.dev/exempt", "operator": "DoesNotExist"}
            ]}},
            "rules": [
                {"name": "block-metadata", "type": "metadata", "action": action,
                 "destinations": ["default", "10.20.0.0/16"], "ports": [80, 443]},
                {"name": "deny-setid-chmod", "type": "chmod", "action": "enforce",
                 "setid": true, "modeMask": "0o111", "paths": ["/usr/**"]},
                {"name": "audit-raises", "type": "privilege", "action": "audit",
                 "raises": ["setuid-root", "capset"]}
            ]
        },
        "status": {"mode": "enforce", "readyNodes": 1, "nodes": {}}
    });
    serde_json::to_string_pretty(&object).unwrap()
}

#[test]
fn an_api_object_as_pretty_json_parses() {
    let p = parse("prod/metadata", &api_object("enforce")).unwrap();
    assert_eq!(
        p.form,
        PolicyForm::Namespaced {
            namespace: Some("prod".into())
        }
    );
    assert_eq!(p.name, "metadata");
    assert_eq!(p.rules.len(), 3);
    assert_eq!(
        p.rules[0].kind,
        RuleKind::Metadata(MetadataRule {
            destinations: vec![
                DestinationSpec::Default,
                DestinationSpec::Cidr("10.20.0.0/16".parse().unwrap())
            ],
            ports: vec![80, 443]
        })
    );
    let RuleKind::Chmod(chmod) = &p.rules[1].kind else {
        panic!("rule 1 is not a chmod rule")
    };
    assert_eq!((chmod.setid, chmod.mode_mask), (true, Some(0o111)));
    assert_eq!(p.scope.pod_selector.unwrap().match_expressions.len(), 1);
}

#[test]
fn an_error_in_pretty_json_is_located_at_its_line() {
    let text = api_object("maybe");
    let (line, at) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("\"maybe\"").map(|c| (i + 1, c)))
        .unwrap();
    // The value of the first rule's `action`, well below the metadata.
    assert!(line > 20, "{text}");
    assert_error(
        &text,
        line,
        at + 1,
        "spec.rules[0].action: unknown action 'maybe' (expected enforce or audit)",
    );
    // An unknown field of the spec, at its key.
    let typo = api_object("enforce").replacen("\"ports\"", "\"port\"", 1);
    let line = typo.lines().position(|l| l.contains("\"port\"")).unwrap() + 1;
    let column = typo.lines().nth(line - 1).unwrap().find('"').unwrap() + 1;
    assert_error(
        &typo,
        line,
        column,
        "spec.rules[0]: unknown field 'port' of a metadata rule",
    );
}

const RESOURCE_EXAMPLES: &str = include_str!("../../deploy/examples/policies.yaml");

/// deploy/examples/policies.yaml is shown in docs/policy.md, and each of its objects parses
/// as what it says it is.
#[test]
fn the_resource_examples_in_the_docs_parse() {
    let blocks: Vec<&str> = docs_yaml_blocks()
        .into_iter()
        .filter(|b| b.contains("apiVersion: sensor.dev/v1"))
        .collect();
    assert_eq!(
        blocks,
        [RESOURCE_EXAMPLES],
        "docs/policy.md shows the example verbatim"
    );
    let forms: Vec<(PolicyForm, Action)> = RESOURCE_EXAMPLES
        .split("\n---\n")
        .enumerate()
        .map(
            |(i, text)| match parse(&format!("policies.yaml object {i}"), text) {
                Ok(p) => (p.form, p.rules[0].action),
                Err(errors) => panic!("{errors:#?}\n{text}"),
            },
        )
        .collect();
    let namespaced = |ns: &str| PolicyForm::Namespaced {
        namespace: Some(ns.into()),
    };
    assert_eq!(
        forms,
        [
            (PolicyForm::Cluster, Action::Enforce),
            (namespaced("prod"), Action::Enforce),
            (namespaced("staging"), Action::Audit),
        ]
    );
}
