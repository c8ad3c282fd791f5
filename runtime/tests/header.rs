//! `include/derm_runtime.h` declares exactly what `src/ffi.rs` exports.
//!
//! The header is written by hand, so nothing else keeps the two in step: a
//! parameter changed on one side only would still compile and link, and C
//! callers would pass garbage. This test reads both files and compares every
//! `#[unsafe(no_mangle)]` function (name, parameter names and types, return
//! type) with its prototype, and every `DERM_*` constant with its `#define`.
//! C types are mapped to the Rust types with the same ABI (`size_t` =
//! `usize`, `const T *` = `*const T`, `void *` = `*mut u8` or `*mut c_void`, ...).

use std::collections::BTreeMap;
use std::path::Path;

/// A function signature: parameters (name, type) and return type, with types
/// spelled as Rust types (`()` for no return value).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signature {
    params: Vec<(String, String)>,
    ret: String,
}

/// What one side declares: functions and `DERM_*` integer constants by name.
#[derive(Debug, Default)]
struct Api {
    functions: BTreeMap<String, Signature>,
    constants: BTreeMap<String, i64>,
}

/// Reads a file of this crate; panics naming it when it cannot.
fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Splits source text into tokens: identifiers and numbers, string literals
/// (quotes kept), lifetimes, `->` and `::`, and single punctuation
/// characters. Comments are dropped; C and Rust share these rules.
fn tokens(src: &str) -> Vec<String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let rest = &chars[i..];
        if c.is_whitespace() {
            i += 1;
        } else if rest.starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            let end = (i + 2..chars.len().saturating_sub(1))
                .find(|&j| chars[j] == '*' && chars[j + 1] == '/')
                .expect("unterminated /* comment");
            i = end + 2;
        } else if c.is_alphanumeric() || c == '_' || (c == '\'' && rest.len() > 1) {
            // Identifiers, numbers and (with a leading quote) lifetimes.
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(chars[start..i.min(chars.len())].iter().collect());
        } else if rest.starts_with(&['-', '>']) || rest.starts_with(&[':', ':']) {
            out.push(rest[..2].iter().collect());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// Splits `tokens` at top-level commas (not inside `()`, `[]` or `<>`).
fn split_commas(tokens: &[String]) -> Vec<&[String]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        match t.as_str() {
            "(" | "[" | "<" => depth += 1,
            ")" | "]" | ">" => depth -= 1,
            "," if depth == 0 => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < tokens.len() {
        parts.push(&tokens[start..]);
    }
    parts
}

/// Index of the bracket closing the one at `open` (`(`, `{`, `[` or `<`).
fn closing(tokens: &[String], open: usize) -> usize {
    let (o, c) = match tokens[open].as_str() {
        "(" => ("(", ")"),
        "{" => ("{", "}"),
        "[" => ("[", "]"),
        "<" => ("<", ">"),
        t => panic!("{t:?} is not an opening bracket"),
    };
    let mut depth = 0;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        if t == o {
            depth += 1;
        } else if t == c {
            depth -= 1;
            if depth == 0 {
                return i;
            }
        }
    }
    panic!("unbalanced {o}");
}

/// Evaluates an integer constant: a decimal literal, optionally negated,
/// optionally in parentheses (`0`, `-4`, `(-4)`).
fn integer(tokens: &[String]) -> Result<i64, String> {
    let text = tokens.concat();
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(&text);
    inner
        .parse()
        .map_err(|_| format!("{text:?} is not an integer literal"))
}

/// Rust spelling of a C type given as tokens (`const uint8_t *` ->
/// `*const u8`). `void *` becomes `*mut c_void`; [`same_type`] also accepts
/// `u8` as its pointee.
fn c_type_to_rust(tokens: &[String]) -> Result<String, String> {
    let stars = tokens.iter().filter(|t| *t == "*").count();
    let is_const = tokens.iter().any(|t| t == "const");
    let base: Vec<&str> = tokens
        .iter()
        .map(String::as_str)
        .filter(|t| *t != "*" && *t != "const")
        .collect();
    let unsupported = || format!("unsupported C type {:?}", tokens.join(" "));
    let last_const = tokens.iter().rposition(|t| t == "const");
    let first_star = tokens.iter().position(|t| t == "*");
    if let (Some(c), Some(s)) = (last_const, first_star)
        && c > s
    {
        return Err(unsupported()); // `T *const`: not used by this header.
    }
    let base = match base.as_slice() {
        ["void"] if stars == 0 => return Ok("()".into()),
        ["void"] => "c_void",
        ["int"] => "c_int",
        ["char"] => "c_char",
        ["float"] => "f32",
        ["double"] => "f64",
        ["size_t"] => "usize",
        ["uint8_t"] => "u8",
        ["int32_t"] => "i32",
        ["uint32_t"] => "u32",
        _ => return Err(unsupported()),
    };
    match stars {
        0 if !is_const => Ok(base.into()),
        1 => Ok(format!(
            "*{} {base}",
            if is_const { "const" } else { "mut" }
        )),
        _ => Err(unsupported()),
    }
}

/// Rust spelling of a Rust type given as tokens, with paths shortened to
/// their last segment (`core::ffi::c_int` -> `c_int`).
fn rust_type(tokens: &[String]) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for t in tokens {
        if t == "::" {
            parts.pop();
        } else {
            parts.push(t);
        }
    }
    match parts.as_slice() {
        ["*", rest @ ..] => format!("*{}", rest.join(" ")),
        _ => parts.join(" "),
    }
}

/// Whether a C-derived type and a Rust type have the same ABI meaning:
/// equal, or a `void` pointer on the C side and a byte pointer in Rust.
fn same_type(c: &str, rust: &str) -> bool {
    c == rust
        || c.strip_suffix("c_void")
            .is_some_and(|ptr| rust.strip_suffix("u8") == Some(ptr))
}

/// Parses the header: `#define DERM_*` integer constants and the function
/// prototypes outside `#ifdef __cplusplus` blocks.
fn parse_header(src: &str) -> Result<Api, String> {
    let mut api = Api::default();
    let mut guard = None;
    // One entry per open #if: whether its lines are skipped (C++ only).
    let mut open_ifs: Vec<bool> = Vec::new();
    let mut declarations = String::new();
    for line in src.lines() {
        let skipping = open_ifs.last() == Some(&true);
        let directive: Vec<String> = match line.trim_start().strip_prefix('#') {
            Some(rest) => tokens(rest),
            None => {
                if !skipping {
                    declarations.push_str(line);
                    declarations.push('\n');
                }
                continue;
            }
        };
        match directive.first().map(String::as_str) {
            Some("ifndef") if open_ifs.is_empty() && guard.is_none() => {
                guard = directive.get(1).cloned();
                open_ifs.push(false);
            }
            Some("if" | "ifdef" | "ifndef") => {
                let cplusplus = directive.get(1).map(String::as_str) == Some("__cplusplus");
                open_ifs.push(skipping || cplusplus);
            }
            Some("else" | "elif") => {
                return Err(format!("#{} is not understood by this test", directive[0]));
            }
            Some("endif") => {
                open_ifs.pop().ok_or("#endif without #if")?;
            }
            Some("define") if !skipping => {
                let name = directive.get(1).ok_or("#define without a name")?;
                let body = &directive[2..];
                if body.is_empty() && guard.as_ref() == Some(name) {
                    continue;
                }
                if !name.starts_with("DERM_") {
                    return Err(format!("#define {name}: constants must be named DERM_*"));
                }
                let value = integer(body).map_err(|e| format!("#define {name}: {e}"))?;
                if api.constants.insert(name.clone(), value).is_some() {
                    return Err(format!("#define {name} twice"));
                }
            }
            _ => {}
        }
    }
    let toks = tokens(&declarations);
    for decl in toks.split(|t| t == ";").filter(|d| !d.is_empty()) {
        let describe = || decl.join(" ");
        let open = decl
            .iter()
            .position(|t| t == "(")
            .ok_or_else(|| format!("not a function prototype: {}", describe()))?;
        if open == 0 || closing(decl, open) != decl.len() - 1 {
            return Err(format!("not a function prototype: {}", describe()));
        }
        let name = decl[open - 1].clone();
        let ret = c_type_to_rust(&decl[..open - 1]).map_err(|e| format!("{name}: {e}"))?;
        let mut params = Vec::new();
        let inner = &decl[open + 1..decl.len() - 1];
        if inner != ["void"] {
            for p in split_commas(inner) {
                let (pname, ty) = p
                    .split_last()
                    .filter(|(_, ty)| !ty.is_empty())
                    .ok_or_else(|| format!("{name}: unnamed parameter {:?}", p.join(" ")))?;
                let ty = c_type_to_rust(ty).map_err(|e| format!("{name}({pname}): {e}"))?;
                params.push((pname.clone(), ty));
            }
        }
        if api
            .functions
            .insert(name.clone(), Signature { params, ret })
            .is_some()
        {
            return Err(format!("{name} declared twice"));
        }
    }
    Ok(api)
}

/// Parses Rust source: every `#[unsafe(no_mangle)]` function (which must be
/// `extern "C"`) and every `DERM_*` constant.
fn parse_rust(src: &str) -> Result<Api, String> {
    let toks = tokens(src);
    let mut api = Api::default();
    let mut no_mangle = false;
    let mut abi: Option<String> = None;
    let mut i = 0;
    while i < toks.len() {
        match toks[i].as_str() {
            "#" if toks.get(i + 1).map(String::as_str) == Some("[") => {
                let end = closing(&toks, i + 1);
                no_mangle |= toks[i + 2..end].iter().any(|t| t == "no_mangle");
                i = end + 1;
                continue;
            }
            "static" if no_mangle => {
                return Err("a no_mangle static: extend this test to compare it".into());
            }
            "extern" => abi = toks.get(i + 1).filter(|t| t.starts_with('"')).cloned(),
            "const" if toks.get(i + 2).map(String::as_str) == Some(":") => {
                let name = &toks[i + 1];
                let eq = (i..toks.len())
                    .find(|&j| toks[j] == "=")
                    .ok_or("const without =")?;
                let semi = (eq..toks.len())
                    .find(|&j| toks[j] == ";")
                    .ok_or("const without ;")?;
                if name.starts_with("DERM_") {
                    let ty = rust_type(&toks[i + 3..eq]);
                    if ty != "c_int" {
                        return Err(format!("{name}: type {ty}, the header's are int"));
                    }
                    let value =
                        integer(&toks[eq + 1..semi]).map_err(|e| format!("const {name}: {e}"))?;
                    api.constants.insert(name.clone(), value);
                }
                i = semi + 1;
                (no_mangle, abi) = (false, None);
                continue;
            }
            "fn" => {
                let name = toks.get(i + 1).ok_or("fn without a name")?.clone();
                let mut open = i + 2;
                if toks.get(open).map(String::as_str) == Some("<") {
                    open = closing(&toks, open) + 1;
                }
                let close = closing(&toks, open);
                let body = (close..toks.len())
                    .find(|&j| toks[j] == "{")
                    .ok_or_else(|| format!("{name}: no body"))?;
                if no_mangle {
                    if abi.as_deref() != Some("\"C\"") {
                        return Err(format!("{name} is no_mangle but not extern \"C\""));
                    }
                    let mut params = Vec::new();
                    for p in split_commas(&toks[open + 1..close]) {
                        let colon = p
                            .iter()
                            .position(|t| t == ":")
                            .ok_or_else(|| format!("{name}: parameter {:?}", p.join(" ")))?;
                        // The name is the last token before `:` (after any `mut`).
                        let pname = colon.checked_sub(1).map(|k| p[k].clone());
                        let pname =
                            pname.ok_or_else(|| format!("{name}: parameter {:?}", p.join(" ")))?;
                        params.push((pname, rust_type(&p[colon + 1..])));
                    }
                    let ret = match toks.get(close + 1).map(String::as_str) {
                        Some("->") => rust_type(&toks[close + 2..body]),
                        _ => "()".into(),
                    };
                    if api
                        .functions
                        .insert(name.clone(), Signature { params, ret })
                        .is_some()
                    {
                        return Err(format!("{name} exported twice"));
                    }
                }
                i = closing(&toks, body) + 1;
                (no_mangle, abi) = (false, None);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(api)
}

/// Every difference between the header and the Rust exports, in words.
fn differences(header: &Api, rust: &Api) -> Vec<String> {
    let mut diffs = Vec::new();
    for (name, c) in &header.functions {
        let Some(r) = rust.functions.get(name) else {
            diffs.push(format!("{name} is declared in the header but not exported"));
            continue;
        };
        if !same_type(&c.ret, &r.ret) {
            diffs.push(format!("{name} returns {} in C, {} in Rust", c.ret, r.ret));
        }
        if c.params.len() != r.params.len() {
            diffs.push(format!(
                "{name} takes {} parameters in C, {} in Rust",
                c.params.len(),
                r.params.len()
            ));
            continue;
        }
        for (k, ((cn, ct), (rn, rt))) in c.params.iter().zip(&r.params).enumerate() {
            if cn != rn || !same_type(ct, rt) {
                diffs.push(format!(
                    "{name} parameter {k}: `{cn}: {ct}` in C, `{rn}: {rt}` in Rust"
                ));
            }
        }
    }
    for name in rust.functions.keys() {
        if !header.functions.contains_key(name) {
            diffs.push(format!("{name} is exported but not declared in the header"));
        }
    }
    for (name, c) in &header.constants {
        match rust.constants.get(name) {
            None => diffs.push(format!("{name} is defined in the header but not in Rust")),
            Some(r) if r != c => diffs.push(format!("{name} is {c} in C, {r} in Rust")),
            Some(_) => {}
        }
    }
    for name in rust.constants.keys() {
        if !header.constants.contains_key(name) {
            diffs.push(format!("{name} is defined in Rust but not in the header"));
        }
    }
    diffs
}

/// Parses both texts and lists their differences.
fn check(header: &str, rust: &str) -> Vec<String> {
    let header = parse_header(header).unwrap_or_else(|e| panic!("derm_runtime.h: {e}"));
    let rust = parse_rust(rust).unwrap_or_else(|e| panic!("ffi.rs: {e}"));
    differences(&header, &rust)
}

#[test]
fn header_declares_exactly_what_ffi_rs_exports() {
    let header = read("include/derm_runtime.h");
    let rust = read("src/ffi.rs");
    let diffs = check(&header, &rust);
    assert!(
        diffs.is_empty(),
        "include/derm_runtime.h and src/ffi.rs disagree:\n  {}",
        diffs.join("\n  ")
    );
    // Guard against a parser that silently finds nothing on either side.
    let parsed = parse_rust(&rust).unwrap();
    assert!(parsed.functions.len() >= 7, "{:?}", parsed.functions.keys());
    assert_eq!(parsed.constants.get("DERM_ERR_LENGTH"), Some(&-4));
    let classify = &parsed.functions["derm_classify"];
    assert_eq!(classify.params[0], ("rgb".into(), "*const u8".into()));
    assert_eq!(classify.ret, "c_int");
}

#[test]
fn header_constants_are_the_compiled_values() {
    use derm_runtime::ffi::*;
    let header = parse_header(&read("include/derm_runtime.h")).unwrap();
    let compiled = [
        ("DERM_OK", DERM_OK),
        ("DERM_ERR_NULL", DERM_ERR_NULL),
        ("DERM_ERR_ARENA", DERM_ERR_ARENA),
        ("DERM_ERR_EMPTY_IMAGE", DERM_ERR_EMPTY_IMAGE),
        ("DERM_ERR_LENGTH", DERM_ERR_LENGTH),
    ];
    for (name, value) in compiled {
        assert_eq!(
            header.constants.get(name),
            Some(&i64::from(value)),
            "{name}"
        );
    }
}

/// Each edit, made to one side only, must be reported. The edits quote
/// today's files (the test says which text it no longer finds): when the API
/// changes on both sides, pick edits of the new text.
#[test]
fn a_change_on_one_side_is_reported() {
    let header = read("include/derm_runtime.h");
    let rust = read("src/ffi.rs");
    let header_edits = [
        ("size_t width, size_t height", "size_t height, size_t width"),
        ("size_t width,", "int width,"),
        ("const uint8_t *rgb", "uint8_t *rgb"),
        ("float *logits_out", "double *logits_out"),
        ("size_t derm_input_len(void);", "int derm_input_len(void);"),
        ("size_t derm_num_classes(void);", ""),
        (
            "#define DERM_ERR_LENGTH (-4)",
            "#define DERM_ERR_LENGTH (-5)",
        ),
        ("#define DERM_OK 0\n", ""),
        (
            "#define DERM_OK 0\n",
            "#define DERM_OK 0\n#define DERM_ERR_OTHER (-9)\n",
        ),
        (
            "size_t derm_arena_align(void);",
            "size_t derm_arena_align(void);\nvoid derm_reset(void *arena);",
        ),
    ];
    let rust_edits = [
        ("class_out: *mut usize", "class_out: *mut u32"),
        (
            "logits_out: *mut f32,\n    logits_len: usize",
            "logits_out: *mut f32",
        ),
        (
            "extern \"C\" fn derm_arena_size() -> usize",
            "extern \"C\" fn derm_arena_size() -> u32",
        ),
        (
            "#[unsafe(no_mangle)]\npub extern \"C\" fn derm_input_len",
            "pub extern \"C\" fn derm_input_len",
        ),
        ("DERM_ERR_ARENA: c_int = -2", "DERM_ERR_ARENA: c_int = -7"),
        ("fn derm_class_name(", "fn derm_class_label("),
    ];
    for (from, to) in header_edits {
        assert!(
            header.contains(from),
            "the header no longer contains {from:?}"
        );
        let edited = header.replacen(from, to, 1);
        assert!(
            !check(&edited, &rust).is_empty(),
            "header edit {from:?} -> {to:?} not reported"
        );
    }
    for (from, to) in rust_edits {
        assert!(rust.contains(from), "ffi.rs no longer contains {from:?}");
        let edited = rust.replacen(from, to, 1);
        assert!(
            !check(&header, &edited).is_empty(),
            "ffi.rs edit {from:?} -> {to:?} not reported"
        );
    }
}
