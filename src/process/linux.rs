//! Linux: everything comes from `/proc`.

use std::fs;
use std::sync::OnceLock;

use super::StartTimes;
use crate::argv::parse_proc_cmdline;

/// The fields of `/proc/<pid>/stat` that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
  pub state: char,
  pub threads: u64,
  pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and
/// parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
  let rest = &text[text.rfind(')')? + 1..];
  let fields: Vec<&str> = rest.split_whitespace().collect();
  let state = fields.first()?.chars().next()?;
  let threads = fields.get(17)?.parse().ok()?;
  let start_ticks = fields.get(19)?.parse().ok()?;
  Some(Stat { state, threads, start_ticks })
}

fn read_stat(pid: u32) -> Option<Stat> {
  parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A zombie whose other threads have ended too; a thread-group leader that
/// exited while its threads run shows `Z` but is still a live process.
pub fn is_zombie(pid: u32) -> bool {
  read_stat(pid).is_some_and(|s| s.state == 'Z' && s.threads <= 1)
}

pub fn start_times(pid: u32) -> Option<StartTimes> {
  let stat = read_stat(pid)?;
  let epoch_ms =
    boot_time_ms().map(|boot| boot + stat.start_ticks as f64 * 1000.0 / ticks_per_second());
  Some(StartTimes { identity: stat.start_ticks as f64, epoch_ms })
}

/// Read once: a process's own start never changes.
pub fn own_start_identity() -> Option<u64> {
  static OWN: OnceLock<Option<u64>> = OnceLock::new();
  *OWN.get_or_init(|| read_stat(std::process::id()).map(|s| s.start_ticks))
}

pub fn cmdline(pid: u32) -> Option<Vec<String>> {
  let args = parse_proc_cmdline(&fs::read(format!("/proc/{pid}/cmdline")).ok()?);
  // An empty command line (a kernel thread, an exiting process) tells nothing.
  (!args.is_empty()).then_some(args)
}

fn ticks_per_second() -> f64 {
  // SAFETY: sysconf has no preconditions.
  let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
  if ticks > 0 {
    ticks as f64
  } else {
    100.0
  }
}

/// `btime` of `/proc/stat`, whole seconds: the 2 s margin of row 8 absorbs it.
fn boot_time_ms() -> Option<f64> {
  static BOOT: OnceLock<Option<f64>> = OnceLock::new();
  *BOOT.get_or_init(|| {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("btime "))?;
    Some(line[6..].trim().parse::<f64>().ok()? * 1000.0)
  })
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn stat_fields_are_counted_after_the_last_parenthesis() {
    let rest = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 3 18 98765 20 21";
    let stat = parse_stat(&format!("42 (node) {rest}")).unwrap();
    assert_eq!(stat, Stat { state: 'S', threads: 3, start_ticks: 98765 });
    let stat = parse_stat(&format!("42 (a) b) c) {rest}")).unwrap();
    assert_eq!(stat.start_ticks, 98765);
  }

  #[test]
  fn the_reference_comm_with_spaces_gives_its_start_time() {
    let line = "42 (My App (v2)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 55555 1000 10";
    assert_eq!(parse_stat(line).map(|s| s.start_ticks), Some(55555));
  }

  #[test]
  fn truncated_or_garbled_stat_lines_are_unreadable() {
    for bad in
      ["", "42 node S 1", "42 (x) S 1 2", "42 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 x 18 y"]
    {
      assert_eq!(parse_stat(bad), None, "{bad}");
    }
  }

  #[test]
  fn this_process_has_a_start_identity_and_a_command_line() {
    let own = own_start_identity().unwrap();
    let times = start_times(std::process::id()).unwrap();
    assert_eq!(times.identity, own as f64);
    let started = times.epoch_ms.unwrap();
    assert!(started <= crate::clock::now_ms() + 2000.0);
    assert!(cmdline(std::process::id()).is_some_and(|a| !a.is_empty()));
  }
}

#[cfg(test)]
mod properties {
  use super::*;
  use proptest::prelude::*;

  proptest! {
    #[test]
    fn stat_parser_never_panics(text in "\\PC{0,200}") {
      let _ = parse_stat(&text);
    }

    /// Whatever the command name holds, the fields after it are found.
    #[test]
    fn any_comm_is_skipped(comm in "[^\n]{0,16}", ticks in any::<u64>()) {
      let rest = format!("S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 1 18 {ticks} 20");
      let stat = parse_stat(&format!("7 ({comm}) {rest}")).unwrap();
      prop_assert_eq!(stat.start_ticks, ticks);
    }
  }
}
