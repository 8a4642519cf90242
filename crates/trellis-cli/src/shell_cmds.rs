//! `trellis completions SHELL` and `trellis manpages DIR`: the command line's own description
//! rendered as shell completions (clap_complete) and man pages (clap_mangen), so they never
//! drift from the flags.

use anyhow::Context;
use clap::{Args, Command};
use clap_complete::Shell;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for: bash, zsh, fish, elvish or powershell
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManpagesArgs {
    /// Directory to write trellis.1 and one trellis-<command>.1 per command into (created if
    /// missing), e.g. /usr/local/share/man/man1
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// Writes the completion script for `args.shell` to stdout; a reader that stops early (`| head`)
/// is not an error.
pub fn completions(args: CompletionsArgs, mut command: Command) -> anyhow::Result<()> {
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// Writes a man page for the command and for each of its (nested) subcommands, and lists
/// the files written.
pub fn manpages(args: ManpagesArgs, mut command: Command) -> anyhow::Result<()> {
    // Building propagates the version to the subcommands, whose pages show it too.
    command.build();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut written = Vec::new();
    write_pages(&args.dir, command, &mut written)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// `command`'s page, then its visible subcommands' pages, named `parent-child.1` as git and
/// cargo name theirs (not clap's `help` subcommands: each page documents its own help).
fn write_pages(dir: &Path, command: Command, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let name = command.get_name().to_owned();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .with_context(|| format!("cannot render the page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let qualified = format!("{name}-{}", sub.get_name());
        write_pages(dir, sub.clone().name(qualified), written)?;
    }
    Ok(())
}
