//! The one progress-bar set-up for the command line (offline jobs, `hoard cp`,
//! transfers of large values): `indicatif` on stderr.

/// A bar of `len` steps drawn with the `indicatif` `template` (the default bar if the
/// template does not parse). Whether to show one at all (a terminal, a large enough
/// job) is the caller's choice.
pub fn bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}
