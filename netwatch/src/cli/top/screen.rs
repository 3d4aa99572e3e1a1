//! `netwatch top` in a terminal: its own screen, redrawn in place every
//! interval and on resize, with keys to quit or switch the view, and the
//! terminal restored on every way out.

use std::{
    io::{self, Write},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crossterm::{
    cursor, event, execute, queue,
    style::Print,
    terminal::{self, ClearType},
};

use super::TopOptions;
use crate::{
    flows::FlowEntry,
    render::{By, Snapshot, fit, render_frame},
};

/// Raw mode, alternate screen, hidden cursor; all undone on drop.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        terminal::enable_raw_mode()?;
        let guard = TerminalGuard;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// Sets the returned flag on SIGINT, SIGTERM and SIGHUP; a second one exits.
fn termination_flag() -> io::Result<Arc<AtomicBool>> {
    use signal_hook::{
        consts::{SIGHUP, SIGINT, SIGTERM},
        flag,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        // The shutdown goes first: it acts only once the flag is set.
        flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))?;
        flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// What a key asks for.
enum Key {
    Quit,
    Show(By),
    Redraw,
    Nothing,
}

fn key(ev: &event::Event) -> Key {
    use event::{Event, KeyCode, KeyEventKind, KeyModifiers};
    match ev {
        Event::Key(k) if k.kind != KeyEventKind::Release => match k.code {
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => Key::Quit,
            KeyCode::Char('c' | 'C') => Key::Show(By::Container),
            KeyCode::Char('f' | 'F') => Key::Show(By::Flow),
            _ => Key::Nothing,
        },
        Event::Resize(..) => Key::Redraw,
        _ => Key::Nothing,
    }
}

/// The full-screen view of [`super::run_top`], until a key, a signal or an
/// error ends it.
pub(super) fn interactive(
    first: Snapshot,
    mut fetch: impl FnMut() -> anyhow::Result<Vec<FlowEntry>>,
    options: &TopOptions,
) -> anyhow::Result<()> {
    let stop = termination_flag()?;
    let _guard = TerminalGuard::enter()?;
    let mut by = options.by;
    let mut prev: Option<Snapshot> = None;
    let mut now = first;
    let mut error: Option<String> = None;
    loop {
        draw(prev.as_ref(), &now, by, options, error.as_deref())?;
        let deadline = Instant::now() + options.interval;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if event::poll(left.min(Duration::from_millis(100)))? {
                match key(&event::read()?) {
                    Key::Quit => return Ok(()),
                    Key::Show(b) => {
                        by = b;
                        draw(prev.as_ref(), &now, by, options, error.as_deref())?;
                    }
                    Key::Redraw => draw(prev.as_ref(), &now, by, options, error.as_deref())?,
                    Key::Nothing => {}
                }
            }
        }
        match fetch() {
            Ok(entries) => {
                prev = Some(std::mem::replace(&mut now, Snapshot::now(entries)));
                error = None;
            }
            Err(e) => error = Some(crate::cli::one_line(&e)),
        }
    }
}

/// Redraws the screen without clearing it first (no flicker): each line
/// overwrites the last frame's and clears what is left of it.
fn draw(
    prev: Option<&Snapshot>,
    now: &Snapshot,
    by: By,
    options: &TopOptions,
    error: Option<&str>,
) -> io::Result<()> {
    let (w, h) = terminal::size().unwrap_or((80, 24));
    let (width, height) = (usize::from(w).max(20), usize::from(h).max(5));
    // Header (2), blank, table header, rows, blank, key help.
    let limit = options.limit.min(height.saturating_sub(6));
    let mut text = render_frame(prev, now, by, options.interval, limit, width);
    if let Some(error) = error {
        text = format!("{}\n{text}", fit(&format!("fetch failed: {error}"), width));
    }
    let mut lines: Vec<&str> = text.lines().collect();
    lines.truncate(height - 2);
    let mut out = io::stdout().lock();
    queue!(out, cursor::MoveTo(0, 0))?;
    for line in &lines {
        queue!(
            out,
            Print(line),
            terminal::Clear(ClearType::UntilNewLine),
            Print("\r\n")
        )?;
    }
    queue!(
        out,
        terminal::Clear(ClearType::UntilNewLine),
        Print("\r\n"),
        Print(fit("q quit · c by container · f by flow", width)),
        terminal::Clear(ClearType::FromCursorDown)
    )?;
    out.flush()
}
