//! The optional TOML configuration file (`--config FILE` or `HOARD_CONFIG`).
//!
//! Values from the file become the *defaults* of the matching command-line options
//! before parsing, which gives the precedence command line > environment > file >
//! built-in default, and lets clap validate file values exactly like flags (errors name
//! the option). Keys are option names (`voltimeout`, `write-quorum` or `write_quorum`);
//! top-level keys apply to whichever command runs, and a `[server]` / `[volume]` /
//! `[dev]` table applies to that command only and wins over top-level keys:
//!
//! ```toml
//! verbose = true
//! [server]
//! db = "/srv/hoard/index"
//! volumes = ["vol1:3001", "vol2:3001", "vol3:3001"]
//! voltimeout = "2s"
//! ```

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context as _};

/// Finds `--config FILE` / `--config=FILE` in `args`, else `HOARD_CONFIG`.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("HOARD_CONFIG").map(PathBuf::from)
}

/// The subcommand named in `args` (the first argument that is one).
fn subcommand_name(cmd: &clap::Command, args: &[OsString]) -> Option<String> {
    args.iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .find(|a| cmd.find_subcommand(a).is_some())
}

/// Applies the file at `path` to `cmd` as defaults for the subcommand in `args`.
pub fn apply_file(
    mut cmd: clap::Command,
    path: &std::path::Path,
    args: &[OsString],
) -> anyhow::Result<clap::Command> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let Some(sub) = subcommand_name(&cmd, args) else {
        return Ok(cmd);
    };
    let mut values: Vec<(String, String)> = Vec::new();
    let mut section = None;
    for (key, value) in &table {
        match value {
            toml::Value::Table(t) if cmd.find_subcommand(key).is_some() => {
                if *key == sub {
                    section = Some(t);
                }
            }
            toml::Value::Table(_) => {
                bail!("config file {}: unknown section [{key}]", path.display())
            }
            v => values.push((key.clone(), scalar(key, v, path)?)),
        }
    }
    for (key, value) in section.into_iter().flatten() {
        values.retain(|(k, _)| k != key);
        values.push((key.clone(), scalar(key, value, path)?));
    }
    for (key, value) in values {
        let id = key.replace('-', "_");
        if cmd.get_arguments().any(|a| a.get_id() == id.as_str()) {
            cmd = cmd.mut_arg(id, |a| a.default_value(value).required(false));
            continue;
        }
        let Some(sc) = cmd.find_subcommand(&sub) else {
            continue;
        };
        if !sc.get_arguments().any(|a| a.get_id() == id.as_str()) {
            bail!(
                "config file {}: `{key}` is not an option of `hoard {sub}`",
                path.display()
            );
        }
        cmd = cmd.mut_subcommand(&sub, |sc| {
            sc.mut_arg(id, |a| a.default_value(value).required(false))
        });
    }
    Ok(cmd)
}

/// A TOML value as the string a flag would carry; arrays become comma lists.
fn scalar(key: &str, v: &toml::Value, path: &std::path::Path) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| scalar(key, i, path))
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(","),
        _ => bail!(
            "config file {}: `{key}` has an unsupported type",
            path.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::{CommandFactory, FromArgMatches};

    fn parse(file: &str, argv: &[&str]) -> anyhow::Result<Cli> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("hoard.toml");
        std::fs::write(&path, file)?;
        let args: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let cmd = apply_file(Cli::command(), &path, &args)?;
        Ok(Cli::from_arg_matches(&cmd.try_get_matches_from(args)?)?)
    }

    fn server(cli: Cli) -> crate::server::ServerArgs {
        match cli.command {
            Command::Server(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_fills_in_and_flags_win() {
        let file = "verbose = true\nport = 1\n[server]\nport = 4000\ndb = \"/d\"\nvolumes = [\"a:1\", \"b:2\"]\nvoltimeout = \"2s\"\nprotect = true\n";
        let cli = parse(file, &["hoard", "server"]).unwrap();
        assert!(cli.verbose);
        let s = server(cli);
        assert_eq!(
            (s.port, s.db.to_str(), s.placement.volumes.len()),
            (4000, Some("/d"), 2)
        );
        assert_eq!(s.voltimeout, std::time::Duration::from_secs(2));
        assert!(s.protect);
        let s = server(parse(file, &["hoard", "server", "--port", "5000"]).unwrap());
        assert_eq!(s.port, 5000);
    }

    #[test]
    fn bad_values_name_the_option() {
        let err = parse(
            "[server]\nport = \"many\"\ndb = \"/d\"\nvolumes = \"a:1\"\n",
            &["hoard", "server"],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--port"), "{err}");
        let err = parse("[server]\nportt = 1\n", &["hoard", "server"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`portt`"), "{err}");
        let err = parse("[srv]\nport = 1\n", &["hoard", "server"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("[srv]"), "{err}");
        assert!(parse("not toml [", &["hoard", "server"]).is_err());
    }

    #[test]
    fn finds_the_config_flag() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["hoard", "server", "--config", "x.toml"])),
            Some(PathBuf::from("x.toml"))
        );
        assert_eq!(
            config_path(&args(&["hoard", "--config=y.toml", "dev"])),
            Some(PathBuf::from("y.toml"))
        );
    }
}
