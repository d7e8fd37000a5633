use super::*;

fn decl(sources: &mut SourceMap, kind: VariableKind, name: &str, value: &str) -> Declaration {
    let text = format!("{name}={value}");
    let file = sources.add(format!("{name}.txt").into(), text.clone());
    let name_span = sources.span(file, 0, name.len());
    let value_span = sources.span(file, name.len() + 1, text.len());
    Declaration {
        name: Spanned::new(name.to_owned(), name_span),
        kind,
        value: (!value.is_empty()).then(|| (value.to_owned(), value_span)),
    }
}

fn run(
    decls: &[(VariableKind, &str, &str)],
    program: &[(&str, &str)],
    env: &[(&str, &str)],
) -> (Scope, Vec<Variable>, Diagnostics, SourceMap) {
    let mut sources = SourceMap::default();
    let decls: Vec<_> = decls
        .iter()
        .map(|(k, n, v)| decl(&mut sources, *k, n, v))
        .collect();
    let program = program
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let env = Environment::Fixed(
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let mut diags = Diagnostics::default();
    let (scope, vars) = resolve(&decls, &program, &env, &sources, &mut diags);
    (scope, vars, diags, sources)
}

fn value(vars: &[Variable], name: &str) -> Option<(String, Party)> {
    vars.iter()
        .find(|v| *v.name == name)
        .map(|v| (v.value.clone(), v.set_by))
}

#[test]
fn defaults_follow_proactive_priorities() {
    use VariableKind::*;
    let decls = [
        (DescriptorDefaultVariable, "dd", "d"),
        (ProgramDefaultVariable, "pd", "d"),
        (JavaPropertyDescriptorDefault, "jd", "d"),
        (JavaPropertyProgramDefault, "jp", "d"),
    ];
    let program = [("dd", "p"), ("pd", "p"), ("jd", "p"), ("jp", "p")];
    let (_, vars, diags, _) = run(&decls, &program, &[]);
    assert!(diags.is_empty(), "{diags:?}");
    // The program overrides a descriptor default; the descriptor overrides a program default.
    assert_eq!(value(&vars, "dd"), Some(("p".into(), Party::Program)));
    assert_eq!(value(&vars, "pd"), Some(("d".into(), Party::Descriptor)));
    assert_eq!(value(&vars, "jd"), Some(("d".into(), Party::Descriptor)));
    assert_eq!(value(&vars, "jp"), Some(("p".into(), Party::Program)));
    // The environment beats both.
    let (_, vars, _, _) = run(&decls, &program, &[("JD", "e"), ("jp", "e")]);
    assert_eq!(value(&vars, "jd"), Some(("e".into(), Party::Environment)));
    assert_eq!(value(&vars, "jp"), Some(("e".into(), Party::Environment)));
}

#[test]
fn who_may_set_what() {
    use VariableKind::*;
    // A programVariable must come from the program.
    let (_, _, diags, _) = run(&[(ProgramVariable, "p", "")], &[], &[]);
    assert_eq!(
        diags.iter().map(|d| d.code).collect::<Vec<_>>(),
        ["empty-variable"]
    );
    let (_, vars, diags, _) = run(&[(ProgramVariable, "p", "")], &[("p", "1")], &[]);
    assert!(diags.is_empty());
    assert_eq!(value(&vars, "p"), Some(("1".into(), Party::Program)));
    // ...and the descriptor may not give it a value.
    let (_, _, diags, _) = run(&[(ProgramVariable, "p", "x")], &[("p", "1")], &[]);
    assert_eq!(
        diags.iter().map(|d| d.code).collect::<Vec<_>>(),
        ["variable-contract"]
    );
    // A descriptorVariable cannot be overridden by the program.
    let (_, _, diags, _) = run(&[(DescriptorVariable, "d", "x")], &[("d", "1")], &[]);
    assert_eq!(
        diags.iter().map(|d| d.code).collect::<Vec<_>>(),
        ["variable-contract"]
    );
    // A javaPropertyVariable reads the environment, with the usual aliases.
    let (_, vars, diags, _) = run(
        &[(JavaPropertyVariable, "user.home", "")],
        &[],
        &[("HOME", "/h")],
    );
    assert!(diags.is_empty());
    assert_eq!(
        value(&vars, "user.home"),
        Some(("/h".into(), Party::Environment))
    );
    let (_, _, diags, _) = run(&[(JavaPropertyVariable, "nope.here", "")], &[], &[]);
    assert_eq!(
        diags.iter().map(|d| d.code).collect::<Vec<_>>(),
        ["empty-variable"]
    );
}

#[test]
fn redefinition_with_another_kind_is_an_error() {
    use VariableKind::*;
    let (_, _, diags, _) = run(
        &[(DescriptorVariable, "a", "1"), (ProgramVariable, "a", "")],
        &[],
        &[],
    );
    assert_eq!(
        diags.iter().map(|d| d.code).collect::<Vec<_>>(),
        ["variable-redefined"]
    );
    let (_, vars, diags, _) = run(
        &[
            (DescriptorVariable, "a", "1"),
            (DescriptorVariable, "a", "2"),
        ],
        &[],
        &[],
    );
    assert!(diags.is_empty());
    assert_eq!(value(&vars, "a"), Some(("2".into(), Party::Descriptor)));
}

#[test]
fn values_may_use_earlier_variables_and_expansion_reports_the_reference() {
    use VariableKind::*;
    let (scope, vars, diags, mut sources) = run(
        &[
            (DescriptorVariable, "host", "n1"),
            (DescriptorVariable, "url", "${host}:80"),
        ],
        &[("extra", "x")],
        &[],
    );
    assert!(diags.is_empty());
    assert_eq!(
        value(&vars, "url"),
        Some(("n1:80".into(), Party::Descriptor))
    );
    let file = sources.add(
        "use.xml".into(),
        "a ${host} ${extra} ${missing} ${bad name}",
    );
    let span = sources.span(file, 0, 41);
    let mut diags = Diagnostics::default();
    assert_eq!(
        scope
            .expand("a ${host} ${extra}", span, &sources, &mut diags)
            .as_deref(),
        Some("a n1 x")
    );
    assert!(
        scope
            .expand(
                "a ${host} ${extra} ${missing} ${bad name}",
                span,
                &sources,
                &mut diags
            )
            .is_none()
    );
    let found: Vec<_> = diags
        .iter()
        .map(|d| (d.code, d.span.map(|s| s.col)))
        .collect();
    assert_eq!(
        found,
        [
            ("undefined-variable", Some(20)),
            ("bad-variable-reference", Some(31))
        ]
    );
    let mut diags = Diagnostics::default();
    assert!(scope.expand("${host", span, &sources, &mut diags).is_none());
    assert_eq!(
        diags.iter().next().map(|d| d.code),
        Some("bad-variable-reference")
    );
}

#[test]
fn properties_files() {
    let props = parse_properties("# c\n! c\na=1\nb : two words\nc 3\nd=long\\\n   line\n\n");
    let pairs: Vec<_> = props
        .iter()
        .map(|(k, v, _)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("a", "1"),
            ("b", "two words"),
            ("c", "3"),
            ("d", "longline")
        ]
    );
    assert_eq!(props[1].2, 12);
}
