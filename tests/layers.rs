//! The module layering, checked on the source text (`src/**/*.rs`):
//!
//! * the store core (`src/store/`) imports nothing from the front-ends or the
//!   operations above it, and the volume server nothing from the replica client;
//! * no two files of one module import each other, directly or through a longer loop
//!   (a reference to an item a `mod.rs` re-exports counts as one to the file that
//!   defines it);
//! * the top-level modules form no loop either.
//!
//! A reference is any `crate::a::b…`, `super::…` or `self::…` path outside comments
//! and unit tests, or a path starting with a child module's name in a `mod.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules the store core must not use: the front-ends and the operations above it.
const ABOVE_STORE: &[&str] = &[
    "ops", "server", "s3", "proto", "jsonapi", "sites", "client", "bench", "dev", "cli",
];

/// `(module, modules it must not use)` beyond the store core's.
const FORBIDDEN: &[(&str, &[&str])] = &[("store", ABOVE_STORE), ("volume", &["replica"])];

/// One source file: its module path and its code, comments and unit tests removed.
struct File {
    path: PathBuf,
    module: Vec<String>,
    /// True for a `mod.rs` (or `a.rs` beside a directory `a/`): its module has children.
    is_parent: bool,
    code: String,
}

/// Every `.rs` file under `dir`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments, and without its `#[cfg(test)] mod tests { … }`.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod ") && n.contains('{'))
        {
            break; // unit tests sit at the end of a file
        }
        // Cut a `//` comment (not the `//` of a URL, `://`).
        let mut cut = line.len();
        let b = line.as_bytes();
        for i in 0..b.len().saturating_sub(1) {
            if b[i] == b'/' && b[i + 1] == b'/' && (i == 0 || b[i - 1] != b':') {
                cut = i;
                break;
            }
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    // Block comments.
    while let Some(start) = out.find("/*") {
        let end = out[start..].find("*/").map_or(out.len(), |e| start + e + 2);
        out.replace_range(start..end, " ");
    }
    out
}

fn load(src: &Path) -> Vec<File> {
    let mut paths = Vec::new();
    walk(src, &mut paths);
    let mut files = Vec::new();
    for path in paths {
        let rel = path.strip_prefix(src).expect("under src");
        let mut module: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let name = module.last().cloned().unwrap_or_default();
        if name == "main" && module.len() == 1 {
            continue; // the binary, over the library
        }
        // Unit-test files (`mod tests;`, `mod command_tests;`) are not layering.
        if name == "tests" || name.ends_with("_tests") {
            continue;
        }
        let mut is_parent = path.with_extension("").is_dir();
        if name == "mod" || name == "lib" {
            module.pop();
            is_parent = true;
        }
        let text = std::fs::read_to_string(&path).expect("read file");
        files.push(File {
            path: rel.to_path_buf(),
            module,
            is_parent,
            code: code_of(&text),
        });
    }
    files
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parses a path (or `use` tree) starting at `s[i..]`, after a `::`; pushes every path
/// it names onto `out` (each prefixed with `prefix`).
fn parse_tree(s: &[char], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    loop {
        while i < s.len() && s[i].is_whitespace() {
            i += 1;
        }
        if i < s.len() && s[i] == '{' {
            i += 1;
            loop {
                while i < s.len() && (s[i].is_whitespace() || s[i] == ',') {
                    i += 1;
                }
                if i >= s.len() || s[i] == '}' {
                    return i + 1;
                }
                i = parse_tree(s, i, &path, out);
            }
        }
        let start = i;
        while i < s.len() && is_ident(s[i]) {
            i += 1;
        }
        let seg: String = s[start..i].iter().collect();
        if seg.is_empty() || seg == "self" {
            // `a::{self, …}`: `a` itself.
            out.push(path);
            return i;
        }
        path.push(seg);
        if i + 1 < s.len() && s[i] == ':' && s[i + 1] == ':' {
            i += 2;
            continue;
        }
        // `a::b as c`: ends at `b`.
        out.push(path);
        return i;
    }
}

/// The module paths `file` refers to (absolute: `["index", "Record"]`).
fn references(file: &File, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let s: Vec<char> = file.code.chars().collect();
    let mut out = Vec::new();
    // The module a `super::` is relative to: a file's parent module.
    let here = file.module.clone();
    let mut i = 0;
    while i < s.len() {
        if !is_ident(s[i]) || (i > 0 && (is_ident(s[i - 1]) || s[i - 1] == ':')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < s.len() && is_ident(s[i]) {
            i += 1;
        }
        let word: String = s[start..i].iter().collect();
        if !(i + 1 < s.len() && s[i] == ':' && s[i + 1] == ':') {
            continue;
        }
        let base: Vec<String> = match word.as_str() {
            "crate" => Vec::new(),
            "self" => here.clone(),
            "super" => {
                let mut base = here.clone();
                base.pop();
                // `super::super::…`
                let mut j = i + 2;
                while s[j..].starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']) {
                    base.pop();
                    j += 7;
                }
                i = j - 2;
                base
            }
            w if file.is_parent && children.contains(w) => {
                let mut base = here.clone();
                base.push(w.to_string());
                base
            }
            _ => continue,
        };
        i = parse_tree(&s, i + 2, &base, &mut out);
    }
    out
}

/// Names a parent module re-exports from a child: `pub use child::…::Name`.
fn reexports(file: &File, children: &BTreeSet<String>) -> BTreeMap<String, Vec<String>> {
    let mut map = BTreeMap::new();
    for stmt in file.code.split(';') {
        let Some(at) = stmt.find("pub use ") else {
            continue;
        };
        let rest = stmt[at + "pub use ".len()..].trim();
        let rest = rest.trim_start_matches("self::");
        let first: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if !children.contains(&first) {
            continue;
        }
        // `a::{B, C as D}`: the names re-exported (an alias is parsed as a name too).
        let s: Vec<char> = rest.chars().collect();
        let mut paths = Vec::new();
        parse_tree(&s, 0, &file.module, &mut paths);
        for p in paths {
            let name = p.last().cloned().unwrap_or_default();
            map.insert(name, p);
        }
    }
    map
}

struct Tree {
    files: Vec<File>,
    /// Module path → index in `files`.
    by_module: BTreeMap<Vec<String>, usize>,
    /// Per parent module: re-exported name → full path.
    reexported: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
}

impl Tree {
    fn new(src: &Path) -> Self {
        let files = load(src);
        let by_module: BTreeMap<_, _> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.module.clone(), i))
            .collect();
        let mut tree = Tree {
            files,
            by_module,
            reexported: BTreeMap::new(),
        };
        for i in 0..tree.files.len() {
            let f = &tree.files[i];
            if f.is_parent {
                let children = tree.children(&f.module);
                let map = reexports(f, &children);
                tree.reexported.insert(f.module.clone(), map);
            }
        }
        tree
    }

    fn children(&self, module: &[String]) -> BTreeSet<String> {
        self.files
            .iter()
            .filter(|f| f.module.len() == module.len() + 1 && f.module.starts_with(module))
            .map(|f| f.module[module.len()].clone())
            .collect()
    }

    /// The file a path leads to: its longest module prefix, followed through a parent's
    /// re-export of the next name.
    fn resolve(&self, path: &[String], depth: usize) -> Option<usize> {
        let n = (0..=path.len())
            .rev()
            .find(|&n| self.by_module.contains_key(&path[..n]))?;
        let at = self.by_module[&path[..n]];
        if depth < 8 && n < path.len() {
            if let Some(target) = self
                .reexported
                .get(&path[..n])
                .and_then(|m| m.get(&path[n]))
            {
                let mut full = target.clone();
                full.extend(path[n + 1..].iter().cloned());
                return self.resolve(&full, depth + 1).or(Some(at));
            }
        }
        Some(at)
    }

    /// Every file → file reference.
    fn edges(&self) -> BTreeSet<(usize, usize)> {
        let mut edges = BTreeSet::new();
        for (i, f) in self.files.iter().enumerate() {
            let children = if f.is_parent {
                self.children(&f.module)
            } else {
                BTreeSet::new()
            };
            for r in references(f, &children) {
                if let Some(j) = self.resolve(&r, 0) {
                    if j != i {
                        edges.insert((i, j));
                    }
                }
            }
        }
        edges
    }
}

/// The loops of a directed graph: its strongly connected components of more than one
/// node (Tarjan's algorithm), each sorted.
fn loops<N: Ord + Clone>(edges: &BTreeSet<(N, N)>) -> Vec<Vec<N>> {
    let nodes: BTreeSet<N> = edges
        .iter()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    let nodes: Vec<N> = nodes.into_iter().collect();
    let id = |n: &N| nodes.binary_search(n).expect("node");
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (a, b) in edges {
        next[id(a)].push(id(b));
    }
    struct State {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        count: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(v: usize, next: &[Vec<usize>], st: &mut State) {
        st.index[v] = Some(st.count);
        st.low[v] = st.count;
        st.count += 1;
        st.stack.push(v);
        st.on[v] = true;
        for &w in &next[v] {
            match st.index[w] {
                None => {
                    visit(w, next, st);
                    st.low[v] = st.low[v].min(st.low[w]);
                }
                Some(iw) if st.on[w] => st.low[v] = st.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(st.low[v]) == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.push(comp);
            }
        }
    }
    let mut st = State {
        index: vec![None; nodes.len()],
        low: vec![0; nodes.len()],
        on: vec![false; nodes.len()],
        stack: Vec::new(),
        count: 0,
        out: Vec::new(),
    };
    for v in 0..nodes.len() {
        if st.index[v].is_none() {
            visit(v, &next, &mut st);
        }
    }
    let mut out: Vec<Vec<N>> = st
        .out
        .into_iter()
        .map(|c| c.into_iter().map(|i| nodes[i].clone()).collect())
        .collect();
    out.sort();
    out
}

fn tree() -> Tree {
    Tree::new(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn store_core_uses_nothing_above_it() {
    let t = tree();
    let mut bad = Vec::new();
    for (i, j) in t.edges() {
        let (from, to) = (&t.files[i], &t.files[j]);
        for (module, forbidden) in FORBIDDEN {
            let to_top = to.module.first().map(String::as_str).unwrap_or("");
            if from.module.first().map(String::as_str) == Some(*module)
                && forbidden.contains(&to_top)
            {
                bad.push(format!(
                    "{} uses {}",
                    from.path.display(),
                    to.path.display()
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layering:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn no_file_import_loops_within_a_module() {
    let t = tree();
    // Edges between files of one module (siblings; a parent's own items are the
    // module's interface, its children's use of them is no loop).
    let edges: BTreeSet<(usize, usize)> = t
        .edges()
        .into_iter()
        .filter(|&(i, j)| {
            let (a, b) = (&t.files[i], &t.files[j]);
            !a.is_parent
                && !b.is_parent
                && a.module.len() == b.module.len()
                && a.module[..a.module.len() - 1] == b.module[..b.module.len() - 1]
        })
        .collect();
    let found: Vec<String> = loops(&edges)
        .into_iter()
        .map(|c| {
            c.iter()
                .map(|&i| t.files[i].path.display().to_string())
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "{} import loops between files:\n  {}",
        found.len(),
        found.join("\n  ")
    );
}

#[test]
fn no_loops_between_top_level_modules() {
    let t = tree();
    let edges: BTreeSet<(String, String)> = t
        .edges()
        .into_iter()
        .filter_map(|(i, j)| {
            let a = t.files[i].module.first()?.clone();
            let b = t.files[j].module.first()?.clone();
            (a != b).then_some((a, b))
        })
        .collect();
    let found: Vec<String> = loops(&edges).into_iter().map(|c| c.join(" <-> ")).collect();
    assert!(
        found.is_empty(),
        "loops between top-level modules:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_checker_sees_references() {
    // A smoke test of the parser on a `use` tree.
    let mut out = Vec::new();
    let s: Vec<char> = "a::{b::C, d, self}, e".chars().collect();
    parse_tree(&s, 0, &["x".to_string()], &mut out);
    let got: Vec<String> = out.iter().map(|p| p.join("::")).collect();
    assert_eq!(got, ["x::a::b::C", "x::a::d", "x::a"]);
}
