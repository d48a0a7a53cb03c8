//! What git does to a blob on its way into the working tree, in git's
//! order: `ident` expansion, end-of-line conversion (`text`, `eol`, `crlf`
//! attributes, `core.autocrlf`, `core.eol`), `working-tree-encoding`, and
//! the `filter` driver (a `smudge` command, or a long-running `process`
//! speaking git's filter protocol, as git-lfs does).

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use git2::{Oid, Repository};

use crate::attributes::{Attributes, State};
use crate::error::{Error, Result, git};

/// How end-of-line conversion treats a file on checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eol {
    /// Written as stored.
    AsIs,
    /// Every LF not preceded by CR becomes CRLF.
    Crlf,
    /// As `Crlf`, but only for text that has no CR at all (`auto`).
    AutoCrlf,
}

/// What a checkout does to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    ident: bool,
    eol: Eol,
    /// Index into [`Context::encodings`].
    encoding: Option<usize>,
    /// Index into [`Context::drivers`].
    driver: Option<usize>,
}

impl Plan {
    /// Writes the blob as it is.
    pub(crate) const PLAIN: Self = Self {
        ident: false,
        eol: Eol::AsIs,
        encoding: None,
        driver: None,
    };

    /// Whether the file goes through a filter driver.
    pub(crate) fn filtered(&self) -> bool {
        self.driver.is_some()
    }

    /// Whether libgit2 (and so `git status` through it) cannot reproduce
    /// the conversion: a filter driver or a working-tree encoding.
    pub(crate) fn foreign(&self) -> bool {
        self.driver.is_some() || self.encoding.is_some()
    }
}

/// A configured filter driver (`filter.<name>.*`).
#[derive(Debug, Clone)]
pub(crate) struct Driver {
    name: String,
    smudge: Option<String>,
    process: Option<String>,
    required: bool,
}

/// The configuration and attributes a checkout converts with.
#[derive(Debug)]
pub(crate) struct Context {
    attributes: Attributes,
    autocrlf: Option<bool>,
    autocrlf_input: bool,
    eol_crlf: bool,
    drivers: Vec<Driver>,
    encodings: Vec<String>,
}

impl Context {
    /// Reads the configuration of `repo` and the attributes that apply to a
    /// tree whose `.gitattributes` files are `tree_attributes` (directory
    /// prefix, blob id). `None` when nothing can change a file.
    pub(crate) fn load(
        repo: &Repository,
        tree_attributes: &[(Vec<u8>, Oid)],
    ) -> Result<Option<Self>> {
        let config = repo
            .config()
            .map_err(git("read configuration of", repo.path().display()))?;
        let string = |key: &str| config.get_string(key).ok();
        let (autocrlf, autocrlf_input) = match string("core.autocrlf")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            Some("input") => (None, true),
            Some(_) => (config.get_bool("core.autocrlf").ok().filter(|v| *v), false),
            None => (None, false),
        };
        let eol_crlf = string("core.eol").is_some_and(|v| v.eq_ignore_ascii_case("crlf"));
        let attributes_file = match config.get_path("core.attributesfile") {
            Ok(path) => Some(path),
            Err(_) => std::env::var_os("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
                .map(|base| base.join("git").join("attributes")),
        };
        let odb = repo
            .odb()
            .map_err(git("open object database", repo.path().display()))?;
        let mut contents = Vec::with_capacity(tree_attributes.len());
        for (dir, oid) in tree_attributes {
            let object = odb.read(*oid).map_err(git("read blob", oid))?;
            contents.push((dir.clone(), object.data().to_vec()));
        }
        let attributes = Attributes::new(repo.commondir(), attributes_file, contents);
        if attributes.is_empty() && autocrlf.is_none() && !autocrlf_input {
            return Ok(None);
        }
        Ok(Some(Self {
            attributes,
            autocrlf,
            autocrlf_input,
            eol_crlf,
            drivers: Vec::new(),
            encodings: Vec::new(),
        }))
    }

    /// Whether text files get CRLF line endings (git's `text_eol_is_crlf`).
    fn text_eol_is_crlf(&self) -> bool {
        if self.autocrlf == Some(true) {
            true
        } else if self.autocrlf_input {
            false
        } else {
            self.eol_crlf
        }
    }

    /// The plan for the file `path`, following git's `convert_attrs`.
    pub(crate) fn plan(&mut self, repo: &Repository, path: &[u8]) -> Plan {
        #[derive(PartialEq)]
        enum Action {
            Undefined,
            Binary,
            Text,
            TextInput,
            TextCrlf,
            Auto,
            AutoInput,
            AutoCrlf,
        }
        let [text, crlf, eol, ident, filter, encoding] = self.attributes.lookup(
            path,
            [
                b"text",
                b"crlf",
                b"eol",
                b"ident",
                b"filter",
                b"working-tree-encoding",
            ],
        );
        let action_of = |state: &State| match state {
            State::Set => Action::Text,
            State::Unset => Action::Binary,
            State::Value(v) if v == b"input" => Action::TextInput,
            State::Value(v) if v == b"auto" => Action::Auto,
            _ => Action::Undefined,
        };
        let mut action = action_of(&text);
        if action == Action::Undefined {
            action = action_of(&crlf);
        }
        if action != Action::Binary {
            let eol = match &eol {
                State::Value(v) if v == b"lf" => Some(false),
                State::Value(v) if v == b"crlf" => Some(true),
                _ => None,
            };
            action = match (action, eol) {
                (Action::Auto, Some(false)) => Action::AutoInput,
                (Action::Auto, Some(true)) => Action::AutoCrlf,
                (_, Some(false)) => Action::TextInput,
                (_, Some(true)) => Action::TextCrlf,
                (action, None) => action,
            };
        }
        let crlf_text = self.text_eol_is_crlf();
        if action == Action::Text {
            action = if crlf_text {
                Action::TextCrlf
            } else {
                Action::TextInput
            };
        }
        if action == Action::Undefined {
            action = if self.autocrlf == Some(true) {
                Action::AutoCrlf
            } else if self.autocrlf_input {
                Action::AutoInput
            } else {
                Action::Binary
            };
        }
        let eol = match action {
            Action::TextCrlf => Eol::Crlf,
            Action::AutoCrlf => Eol::AutoCrlf,
            Action::Auto if crlf_text => Eol::AutoCrlf,
            _ => Eol::AsIs,
        };
        let encoding = match encoding {
            State::Value(v) if !v.is_empty() && !is_utf8_name(&v) => {
                let name = String::from_utf8_lossy(&v).into_owned();
                Some(match self.encodings.iter().position(|e| *e == name) {
                    Some(i) => i,
                    None => {
                        self.encodings.push(name);
                        self.encodings.len() - 1
                    }
                })
            }
            _ => None,
        };
        let driver = match filter {
            State::Value(name) if !name.is_empty() => self.driver(repo, &name),
            _ => None,
        };
        Plan {
            ident: ident == State::Set,
            eol,
            encoding,
            driver,
        }
    }

    fn driver(&mut self, repo: &Repository, name: &[u8]) -> Option<usize> {
        let name = String::from_utf8_lossy(name).into_owned();
        if let Some(i) = self.drivers.iter().position(|d| d.name == name) {
            return Some(i);
        }
        let config = repo.config().ok()?;
        let string = |key: &str| {
            config
                .get_string(&format!("filter.{name}.{key}"))
                .ok()
                .filter(|v| !v.is_empty())
        };
        let driver = Driver {
            smudge: string("smudge"),
            process: string("process"),
            required: config
                .get_bool(&format!("filter.{name}.required"))
                .unwrap_or(false),
            name,
        };
        if driver.smudge.is_none() && driver.process.is_none() && !driver.required {
            return None;
        }
        self.drivers.push(driver);
        Some(self.drivers.len() - 1)
    }

    /// Converts `data` (the blob `oid`) as git does before running a filter
    /// driver: `ident`, end of lines, working-tree encoding.
    pub(crate) fn convert(&self, plan: &Plan, oid: Oid, data: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        if plan.ident {
            out = ident(data, oid);
        }
        let current = out.as_deref().unwrap_or(data);
        if let Some(converted) = to_crlf(current, plan.eol) {
            out = Some(converted);
        }
        if let Some(i) = plan.encoding {
            let current = out.as_deref().unwrap_or(data);
            if let Some(encoded) = encode(current, &self.encodings[i]) {
                out = Some(encoded);
            }
        }
        out
    }
}

fn is_utf8_name(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"utf-8") || name.eq_ignore_ascii_case(b"utf8")
}

/// `$Id$` (or an expanded `$Id: ... $`) becomes `$Id: <blob id> $`, as in
/// git's `ident_to_worktree`.
fn ident(data: &[u8], oid: Oid) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut src = data;
    let mut changed = false;
    while let Some(dollar) = src.iter().position(|&b| b == b'$') {
        out.extend_from_slice(&src[..=dollar]);
        src = &src[dollar + 1..];
        if src.len() < 3 || &src[..2] != b"Id" {
            continue;
        }
        if src[2] == b'$' {
            src = &src[3..];
        } else if src[2] == b':' {
            let Some(end) = src[3..].iter().position(|&b| b == b'$').map(|e| e + 3) else {
                break;
            };
            if src[3..end].contains(&b'\n') {
                continue;
            }
            // Spaces inside: another version control system's id, kept.
            if end > 4
                && src[4..end]
                    .iter()
                    .position(|&b| b == b' ')
                    .is_some_and(|s| s + 4 < end - 1)
            {
                continue;
            }
            src = &src[end + 1..];
        } else {
            continue;
        }
        out.extend_from_slice(format!("Id: {oid} $").as_bytes());
        changed = true;
    }
    out.extend_from_slice(src);
    changed.then_some(out)
}

/// End-of-line conversion for checkout (git's `crlf_to_worktree`).
fn to_crlf(data: &[u8], eol: Eol) -> Option<Vec<u8>> {
    if eol == Eol::AsIs || data.is_empty() {
        return None;
    }
    let (mut lone_lf, mut lone_cr, mut crlf, mut nul) = (0usize, 0usize, 0usize, 0usize);
    let (mut printable, mut nonprintable) = (0usize, 0usize);
    let mut i = 0;
    while i < data.len() {
        let c = data[i];
        i += 1;
        match c {
            b'\r' => {
                if data.get(i) == Some(&b'\n') {
                    crlf += 1;
                    i += 1;
                } else {
                    lone_cr += 1;
                }
            }
            b'\n' => lone_lf += 1,
            127 => nonprintable += 1,
            8 | 9 | 27 | 12 => printable += 1,
            0 => {
                nul += 1;
                nonprintable += 1;
            }
            c if c < 32 => nonprintable += 1,
            _ => printable += 1,
        }
    }
    // A DOS end-of-file character does not count.
    if data.last() == Some(&0x1a) {
        nonprintable = nonprintable.saturating_sub(1);
    }
    if lone_lf == 0 {
        return None;
    }
    if eol == Eol::AutoCrlf {
        let binary = lone_cr > 0 || nul > 0 || (printable >> 7) < nonprintable;
        if lone_cr > 0 || crlf > 0 || binary {
            return None;
        }
    }
    let mut out = Vec::with_capacity(data.len() + lone_lf);
    let mut last = 0u8;
    for &b in data {
        if b == b'\n' && last != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        last = b;
    }
    Some(out)
}

/// UTF-8 to `encoding` as git (through glibc's iconv) writes it; `None`
/// when the text is not UTF-8 or the conversion fails (git then writes the
/// blob as it is).
fn encode(data: &[u8], encoding: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(data).ok()?;
    let upper = encoding.to_ascii_uppercase().replace('_', "-");
    let utf16 = |le: bool, bom: bool| {
        let mut out = Vec::with_capacity(data.len() * 2 + 2);
        if bom {
            out.extend_from_slice(if le { &[0xff, 0xfe] } else { &[0xfe, 0xff] });
        }
        for unit in text.encode_utf16() {
            out.extend_from_slice(&if le {
                unit.to_le_bytes()
            } else {
                unit.to_be_bytes()
            });
        }
        out
    };
    let utf32 = |le: bool, bom: bool| {
        let mut out = Vec::with_capacity(data.len() * 4 + 4);
        if bom {
            out.extend_from_slice(if le {
                &[0xff, 0xfe, 0, 0]
            } else {
                &[0, 0, 0xfe, 0xff]
            });
        }
        for c in text.chars() {
            let c = u32::from(c);
            out.extend_from_slice(&if le { c.to_le_bytes() } else { c.to_be_bytes() });
        }
        out
    };
    // glibc's "UTF-16" and "UTF-32" write a byte order mark and little
    // endian (on little-endian hosts); git adds the mark itself for the
    // "-BOM" names.
    let le = cfg!(target_endian = "little");
    match upper.as_str() {
        "UTF-16" | "UTF16" => Some(utf16(le, true)),
        "UTF-16LE" | "UTF16LE" => Some(utf16(true, false)),
        "UTF-16BE" | "UTF16BE" => Some(utf16(false, false)),
        "UTF-16LE-BOM" | "UTF16LE-BOM" => Some(utf16(true, true)),
        "UTF-16BE-BOM" | "UTF16BE-BOM" => Some(utf16(false, true)),
        "UTF-32" | "UTF32" => Some(utf32(le, true)),
        "UTF-32LE" | "UTF32LE" => Some(utf32(true, false)),
        "UTF-32BE" | "UTF32BE" => Some(utf32(false, false)),
        _ => iconv(data, encoding),
    }
}

/// Any other encoding through the system's `iconv` program (the same
/// library git converts with).
fn iconv(data: &[u8], encoding: &str) -> Option<Vec<u8>> {
    let output = run_with_input(
        Command::new("iconv").args(["-f", "UTF-8", "-t", encoding]),
        data,
    )
    .ok()?;
    output.status.success().then_some(output.stdout)
}

/// Runs `command` with `input` on its stdin (written by a thread of its
/// own, so that a command writing much output does not block).
fn run_with_input(command: &mut Command, input: &[u8]) -> std::io::Result<std::process::Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    std::thread::scope(|scope| {
        // A filter may exit without reading all its input: not an error.
        scope.spawn(move || {
            let _ = stdin.write_all(input);
        });
        child.wait_with_output()
    })
}

/// The filter drivers of one checkout: long-running processes are started
/// once, at their first file, and stopped at the end.
#[derive(Debug)]
pub(crate) struct Filters<'a> {
    context: &'a Context,
    root: PathBuf,
    processes: HashMap<usize, Option<Process>>,
}

/// A long-running filter process (git's protocol version 2).
#[derive(Debug)]
struct Process {
    child: Child,
    input: BufWriter<ChildStdin>,
    output: BufReader<ChildStdout>,
    smudge: bool,
}

impl<'a> Filters<'a> {
    /// Filters for a checkout into `root` (the filters' working directory).
    pub(crate) fn new(context: &'a Context, root: &Path) -> Self {
        Self {
            context,
            root: root.to_path_buf(),
            processes: HashMap::new(),
        }
    }

    /// Runs `path`'s driver on `data`: the smudged content, or `data` as it
    /// is when a driver that is not `required` fails (as git does).
    pub(crate) fn smudge(&mut self, plan: &Plan, path: &[u8], data: Vec<u8>) -> Result<Vec<u8>> {
        let Some(index) = plan.driver else {
            return Ok(data);
        };
        let driver = &self.context.drivers[index];
        let result = if driver.process.is_some() {
            self.smudge_with_process(index, path, &data)
        } else if let Some(command) = &driver.smudge {
            smudge_with_command(command, &self.root, path, &data)
        } else {
            Err("no smudge or process command is configured".to_owned())
        };
        match result {
            Ok(Some(out)) => Ok(out),
            Ok(None) if !driver.required => Ok(data),
            Ok(None) => Err(Error::Filter {
                path: String::from_utf8_lossy(path).into_owned(),
                driver: driver.name.clone(),
                reason: "the filter process does not smudge".to_owned(),
            }),
            Err(reason) if driver.required => Err(Error::Filter {
                path: String::from_utf8_lossy(path).into_owned(),
                driver: driver.name.clone(),
                reason,
            }),
            Err(reason) => {
                tracing::warn!(path = %String::from_utf8_lossy(path), driver = driver.name, reason, "smudge filter failed: the file is written unfiltered");
                Ok(data)
            }
        }
    }

    fn smudge_with_process(
        &mut self,
        index: usize,
        path: &[u8],
        data: &[u8],
    ) -> std::result::Result<Option<Vec<u8>>, String> {
        let driver = &self.context.drivers[index];
        if !self.processes.contains_key(&index) {
            let command = driver.process.as_deref().unwrap_or_default();
            let started = Process::start(command, &self.root)
                .map_err(|e| format!("cannot start filter process {command:?}: {e}"))?;
            self.processes.insert(index, Some(started));
        }
        let slot = self.processes.get_mut(&index).expect("inserted above");
        let Some(process) = slot else {
            return Err("the filter process failed earlier".to_owned());
        };
        if !process.smudge {
            return Ok(None);
        }
        match process.smudge(path, data) {
            Ok(Ok(out)) => Ok(Some(out)),
            Ok(Err(status)) => {
                if status == "abort" {
                    process.smudge = false;
                }
                Err(format!("the filter process answered status={status}"))
            }
            Err(error) => {
                if let Some(mut process) = slot.take() {
                    let _ = process.child.kill();
                    let _ = process.child.wait();
                }
                Err(format!("the filter process failed: {error}"))
            }
        }
    }

    /// Stops the filter processes (closing their input, as git does) and
    /// waits for them.
    pub(crate) fn finish(self) {
        for (_, process) in self.processes {
            if let Some(process) = process {
                let Process {
                    mut child, input, ..
                } = process;
                drop(input);
                let _ = child.wait();
            }
        }
    }
}

fn smudge_with_command(
    command: &str,
    root: &Path,
    path: &[u8],
    data: &[u8],
) -> std::result::Result<Option<Vec<u8>>, String> {
    let quoted = shell_quote(&String::from_utf8_lossy(path));
    let command = command.replace("%f", &quoted);
    let output = run_with_input(
        Command::new("sh").arg("-c").arg(&command).current_dir(root),
        data,
    )
    .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(Some(output.stdout))
    } else {
        Err(format!("{command:?} exited with {}", output.status))
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Largest payload of one pkt-line.
const PKT_MAX: usize = 65516;

impl Process {
    fn start(command: &str, root: &Path) -> std::io::Result<Self> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let input = BufWriter::new(child.stdin.take().expect("stdin was piped"));
        let output = BufReader::new(child.stdout.take().expect("stdout was piped"));
        let mut process = Self {
            child,
            input,
            output,
            smudge: false,
        };
        match process.handshake() {
            Ok(()) => Ok(process),
            Err(error) => {
                let _ = process.child.kill();
                let _ = process.child.wait();
                Err(error)
            }
        }
    }

    fn handshake(&mut self) -> std::io::Result<()> {
        self.write_text("git-filter-client")?;
        self.write_text("version=2")?;
        self.flush_pkt()?;
        self.input.flush()?;
        let welcome = self.read_list()?;
        if welcome.first().map(String::as_str) != Some("git-filter-server")
            || !welcome.iter().any(|l| l == "version=2")
        {
            return Err(protocol(format!("unexpected greeting {welcome:?}")));
        }
        self.write_text("capability=clean")?;
        self.write_text("capability=smudge")?;
        self.flush_pkt()?;
        self.input.flush()?;
        let capabilities = self.read_list()?;
        self.smudge = capabilities.iter().any(|c| c == "capability=smudge");
        Ok(())
    }

    /// One smudge request: `Ok(Err(status))` when the process declines.
    fn smudge(
        &mut self,
        path: &[u8],
        data: &[u8],
    ) -> std::io::Result<std::result::Result<Vec<u8>, String>> {
        self.write_text("command=smudge")?;
        let mut line = b"pathname=".to_vec();
        line.extend_from_slice(path);
        line.push(b'\n');
        self.write_pkt(&line)?;
        self.flush_pkt()?;
        for chunk in data.chunks(PKT_MAX) {
            self.write_pkt(chunk)?;
        }
        self.flush_pkt()?;
        self.input.flush()?;
        let status = status_of(&self.read_list()?);
        if status.as_deref() != Some("success") {
            return Ok(Err(status.unwrap_or_default()));
        }
        let mut out = Vec::with_capacity(data.len());
        while let Some(packet) = self.read_pkt()? {
            out.extend_from_slice(&packet);
        }
        // A final status list, empty when the first one stands.
        match status_of(&self.read_list()?) {
            Some(status) if status != "success" => Ok(Err(status)),
            _ => Ok(Ok(out)),
        }
    }

    fn write_text(&mut self, text: &str) -> std::io::Result<()> {
        self.write_pkt(format!("{text}\n").as_bytes())
    }

    fn write_pkt(&mut self, payload: &[u8]) -> std::io::Result<()> {
        write!(self.input, "{:04x}", payload.len() + 4)?;
        self.input.write_all(payload)
    }

    fn flush_pkt(&mut self) -> std::io::Result<()> {
        self.input.write_all(b"0000")
    }

    /// One packet, `None` for a flush packet.
    fn read_pkt(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut header = [0u8; 4];
        self.output.read_exact(&mut header)?;
        let len = std::str::from_utf8(&header)
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| protocol(format!("bad packet header {header:?}")))?;
        if len == 0 {
            return Ok(None);
        }
        if len < 4 {
            return Err(protocol(format!("bad packet length {len}")));
        }
        let mut payload = vec![0u8; len - 4];
        self.output.read_exact(&mut payload)?;
        Ok(Some(payload))
    }

    /// Text packets up to a flush packet, without their newlines.
    fn read_list(&mut self) -> std::io::Result<Vec<String>> {
        let mut lines = Vec::new();
        while let Some(packet) = self.read_pkt()? {
            let text = String::from_utf8_lossy(&packet);
            lines.push(text.strip_suffix('\n').unwrap_or(&text).to_owned());
        }
        Ok(lines)
    }
}

fn status_of(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("status="))
        .map(str::to_owned)
}

fn protocol(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_follows_git() {
        assert_eq!(
            to_crlf(b"a\nb\r\n", Eol::Crlf).as_deref(),
            Some(&b"a\r\nb\r\n"[..])
        );
        assert_eq!(to_crlf(b"a\nb\r\n", Eol::AutoCrlf), None);
        assert_eq!(to_crlf(b"a\0\n", Eol::AutoCrlf), None);
        assert_eq!(
            to_crlf(b"a\nb\n", Eol::AutoCrlf).as_deref(),
            Some(&b"a\r\nb\r\n"[..])
        );
        assert_eq!(to_crlf(b"a\nb\n", Eol::AsIs), None);
    }

    #[test]
    fn ident_follows_git() {
        let oid = Oid::from_str("0123456789012345678901234567890123456789").expect("hex");
        let out = ident(b"x $Id$ y $Id: old $ z $Id: a b c $\n", oid).expect("changed");
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!("x $Id: {oid} $ y $Id: {oid} $ z $Id: a b c $\n")
        );
        assert_eq!(ident(b"no id here $", oid), None);
    }
}
