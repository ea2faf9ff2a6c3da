//! Reads facts out of a `mariadb-dump` stream as it flows past, without holding it.
//!
//! A logical dump *is* the snapshot, so what a restore must reproduce is taken from it, never from
//! a second query that could see another moment: the objects it creates, the rows it inserts
//! (counted and hashed table by table), the binlog coordinates it records, and whether it reached
//! its `-- Dump completed` trailer. The scanner understands just enough SQL for that: line starts,
//! backquoted names, and the tuples of `INSERT INTO … VALUES (…),(…);` with quoted strings.
//!
//! A table's digest is SHA-256 over each row tuple exactly as the dump writes it, from `(` to `)`,
//! followed by `\n`, in dump order (primary-key order, as coffer asks for `--order-by-primary`).
//! Dumping a restored table with the same options and scanning it gives the same digest, which is
//! how a drill proves restored data equals backed-up data.

use sha2::{Digest, Sha256};

use crate::manifest::{BinlogCoordinates, DatabaseExpectations, Expectations, TableExpectation};

/// Longest line start kept for classification; longer lines are only scanned for tuples.
const LINE_CAP: usize = 4096;

/// What a dump stream told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpFacts {
    /// Objects and per-table data.
    pub expectations: Expectations,
    /// The snapshot's binlog coordinates, when the dump recorded them.
    pub binlog: Option<BinlogCoordinates>,
    /// Whether the stream ended with the dump tool's completion trailer.
    pub completed: bool,
}

struct TableState {
    name: String,
    rows: u64,
    hasher: Sha256,
}

struct DatabaseState {
    name: String,
    tables: Vec<TableState>,
    views: Vec<String>,
    routines: Vec<String>,
    triggers: Vec<String>,
    events: Vec<String>,
}

/// The streaming scanner: [`DumpScanner::feed`] every chunk, then [`DumpScanner::finish`].
pub struct DumpScanner {
    line: Vec<u8>,
    in_insert: bool,
    depth: u32,
    quoted: bool,
    escaped: bool,
    databases: Vec<DatabaseState>,
    current_db: Option<usize>,
    current_table: Option<usize>,
    binlog_file: Option<String>,
    binlog_position: Option<u64>,
    gtid_position: Option<String>,
    completed: bool,
}

impl Default for DumpScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl DumpScanner {
    /// A scanner at the start of a stream.
    pub fn new() -> Self {
        Self {
            line: Vec::with_capacity(LINE_CAP),
            in_insert: false,
            depth: 0,
            quoted: false,
            escaped: false,
            databases: Vec::new(),
            current_db: None,
            current_table: None,
            binlog_file: None,
            binlog_position: None,
            gtid_position: None,
            completed: false,
        }
    }

    /// Scans the next chunk of the stream.
    pub fn feed(&mut self, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            if self.in_insert {
                i = self.scan_tuples(data, i);
                continue;
            }
            let b = data[i];
            i += 1;
            if b == b'\n' {
                // MariaDB 10.x writes `INSERT INTO `t` VALUES` alone, tuples on the lines after.
                if self.line.starts_with(b"INSERT INTO `") && self.line.ends_with(b"` VALUES") {
                    self.start_insert();
                } else {
                    self.end_line();
                }
                continue;
            }
            if self.line.len() < LINE_CAP {
                self.line.push(b);
            }
            // MySQL and older MariaDB write the tuples on the statement's own line.
            if b == b' '
                && self.line.starts_with(b"INSERT INTO `")
                && self.line.ends_with(b"` VALUES ")
            {
                self.start_insert();
            }
        }
    }

    /// Scans row tuples from `data[start..]` until the statement's `;`; returns where it stopped.
    ///
    /// `memchr` jumps between the few bytes that matter (quotes, backslashes, parentheses, the
    /// final semicolon), so the scan runs at memory speed rather than a byte at a time.
    fn scan_tuples(&mut self, data: &[u8], start: usize) -> usize {
        let (Some(db), Some(t)) = (self.current_db, self.current_table) else {
            unreachable!("an INSERT always has a database and a table")
        };
        let table = &mut self.databases[db].tables[t];
        let mut tuple_start = (self.depth > 0).then_some(start);
        let mut i = start;
        while i < data.len() {
            if self.quoted {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                let Some(offset) = memchr::memchr2(b'\'', b'\\', &data[i..]) else {
                    i = data.len();
                    break;
                };
                let at = i + offset;
                if data[at] == b'\\' {
                    self.escaped = true;
                } else {
                    self.quoted = false;
                }
                i = at + 1;
            } else if self.depth == 0 {
                let Some(offset) = memchr::memchr2(b'(', b';', &data[i..]) else {
                    i = data.len();
                    break;
                };
                let at = i + offset;
                i = at + 1;
                if data[at] == b';' {
                    self.in_insert = false;
                    self.line.clear();
                    return i;
                }
                self.depth = 1;
                tuple_start = Some(at);
            } else {
                let Some(offset) = memchr::memchr3(b'\'', b'(', b')', &data[i..]) else {
                    i = data.len();
                    break;
                };
                let at = i + offset;
                i = at + 1;
                match data[at] {
                    b'\'' => self.quoted = true,
                    b'(' => self.depth += 1,
                    _ => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            let from = tuple_start.take().unwrap_or(start);
                            table.hasher.update(&data[from..i]);
                            table.hasher.update(b"\n");
                            table.rows += 1;
                        }
                    }
                }
            }
        }
        if let Some(from) = tuple_start {
            table.hasher.update(&data[from..i]);
        }
        i
    }

    fn start_insert(&mut self) {
        let name = backquoted(&self.line[b"INSERT INTO ".len()..]).unwrap_or_default();
        let db = self.database_for_object();
        let tables = &mut self.databases[db].tables;
        let index = match tables.iter().position(|t| t.name == name) {
            Some(index) => index,
            None => {
                tables.push(TableState {
                    name,
                    rows: 0,
                    hasher: Sha256::new(),
                });
                tables.len() - 1
            }
        };
        self.current_table = Some(index);
        self.in_insert = true;
        self.depth = 0;
        self.quoted = false;
        self.escaped = false;
    }

    /// The current database, creating an unnamed one for a dump without `USE` lines.
    fn database_for_object(&mut self) -> usize {
        if let Some(db) = self.current_db {
            return db;
        }
        self.use_database(String::new())
    }

    fn use_database(&mut self, name: String) -> usize {
        let index = match self.databases.iter().position(|d| d.name == name) {
            Some(index) => index,
            None => {
                self.databases.push(DatabaseState {
                    name,
                    tables: Vec::new(),
                    views: Vec::new(),
                    routines: Vec::new(),
                    triggers: Vec::new(),
                    events: Vec::new(),
                });
                self.databases.len() - 1
            }
        };
        self.current_db = Some(index);
        index
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        self.classify(&line);
        self.line = line;
        self.line.clear();
    }

    fn classify(&mut self, line: &[u8]) {
        let after = |needle: &[u8]| find(line, needle).map(|i| &line[i + needle.len()..]);
        if let Some(rest) = line.strip_prefix(b"USE `") {
            if let Some(name) = ident(rest) {
                self.use_database(name);
            }
        } else if line.starts_with(b"CREATE DATABASE ") {
            if let Some(name) = after(b"`").and_then(ident) {
                // Register it (an empty database is still expected), but only `USE` switches.
                let previous = self.current_db;
                self.use_database(name);
                self.current_db = previous;
            }
        } else if let Some(rest) = line.strip_prefix(b"CREATE TABLE `") {
            if let Some(name) = ident(rest) {
                let db = self.database_for_object();
                let tables = &mut self.databases[db].tables;
                if !tables.iter().any(|t| t.name == name) {
                    tables.push(TableState {
                        name,
                        rows: 0,
                        hasher: Sha256::new(),
                    });
                }
            }
        } else if let Some(rest) = line.strip_prefix(b"/*!50001 VIEW `") {
            if let Some(name) = ident(rest) {
                let db = self.database_for_object();
                push_unique(&mut self.databases[db].views, name);
            }
        } else if line.starts_with(b"/*!50003 CREATE*/") && find(line, b" TRIGGER ").is_some() {
            // The trigger's name is written as its author wrote it: quoted or not, maybe qualified.
            if let Some(name) = after(b" TRIGGER ").and_then(name_token) {
                let db = self.database_for_object();
                push_unique(&mut self.databases[db].triggers, name);
            }
        } else if line.starts_with(b"/*!50106 CREATE*/") && find(line, b"EVENT `").is_some() {
            if let Some(name) = after(b"EVENT `").and_then(ident) {
                let db = self.database_for_object();
                push_unique(&mut self.databases[db].events, name);
            }
        } else if line.starts_with(b"CREATE ")
            && (find(line, b" PROCEDURE `").is_some() || find(line, b" FUNCTION `").is_some())
        {
            let name = after(b" PROCEDURE `")
                .or_else(|| after(b" FUNCTION `"))
                .and_then(ident);
            if let Some(name) = name {
                let db = self.database_for_object();
                push_unique(&mut self.databases[db].routines, name);
            }
        } else if line.starts_with(b"-- ") || line.starts_with(b"CHANGE ") {
            let text = String::from_utf8_lossy(line.strip_prefix(b"-- ").unwrap_or(line));
            self.comment(&text);
        }
    }

    fn comment(&mut self, text: &str) {
        if text.starts_with("Dump completed") {
            self.completed = true;
        } else if text.starts_with("CHANGE MASTER TO")
            || text.starts_with("CHANGE REPLICATION SOURCE TO")
        {
            // `CHANGE MASTER TO MASTER_USE_GTID=slave_pos` comes first on MariaDB: only a line
            // with both a file and a position sets the coordinates.
            let file = quoted_value(text, "_LOG_FILE='");
            let position = text
                .split_once("_LOG_POS=")
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|digits| digits.parse().ok());
            if let (Some(file), Some(position)) = (file, position) {
                self.binlog_file = Some(file.to_string());
                self.binlog_position = Some(position);
            }
        } else if text.starts_with("SET GLOBAL gtid_slave_pos=") {
            self.gtid_position = quoted_value(text, "gtid_slave_pos='").map(str::to_string);
        }
    }

    /// Ends the scan and returns what it found.
    pub fn finish(self) -> DumpFacts {
        let databases = self
            .databases
            .into_iter()
            .filter(|d| !d.name.is_empty() || !d.tables.is_empty())
            .map(|d| DatabaseExpectations {
                name: d.name,
                tables: d
                    .tables
                    .into_iter()
                    .map(|t| TableExpectation {
                        name: t.name,
                        rows: t.rows,
                        sha256: hex::encode(t.hasher.finalize()),
                    })
                    .collect(),
                views: d.views,
                routines: d.routines,
                triggers: d.triggers,
                events: d.events,
            })
            .collect();
        let binlog = match (self.binlog_file, self.binlog_position) {
            (Some(file), Some(position)) => Some(BinlogCoordinates {
                file,
                position,
                gtid_position: self.gtid_position.filter(|g| !g.is_empty()),
            }),
            _ => None,
        };
        DumpFacts {
            expectations: Expectations { databases },
            binlog,
            completed: self.completed,
        }
    }
}

fn push_unique(list: &mut Vec<String>, name: String) {
    if !list.contains(&name) {
        list.push(name);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A backquoted identifier's text, given the bytes after its opening backquote (`` ` `` inside a
/// name is written doubled).
fn ident(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'`' {
            if bytes.get(i + 1) == Some(&b'`') {
                out.push(b'`');
                i += 2;
                continue;
            }
            return String::from_utf8(out).ok();
        }
        out.push(bytes[i]);
        i += 1;
    }
    None
}

/// A possibly qualified, possibly unquoted object name at the start of `bytes`; the last part.
fn name_token(bytes: &[u8]) -> Option<String> {
    let mut rest = bytes;
    loop {
        let (name, len) = if rest.first() == Some(&b'`') {
            let name = ident(&rest[1..])?;
            let len = 2 + name.len() + name.matches('`').count();
            (name, len)
        } else {
            let len = rest
                .iter()
                .position(|b| {
                    !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$' || *b >= 0x80)
                })
                .unwrap_or(rest.len());
            (String::from_utf8(rest[..len].to_vec()).ok()?, len)
        };
        if rest.get(len) == Some(&b'.') {
            rest = &rest[len + 1..];
            continue;
        }
        return (!name.is_empty()).then_some(name);
    }
}

/// The identifier that starts at the first backquote of `bytes`.
fn backquoted(bytes: &[u8]) -> Option<String> {
    let start = bytes.iter().position(|&b| b == b'`')?;
    ident(&bytes[start + 1..])
}

fn quoted_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let (_, rest) = text.split_once(key)?;
    rest.split_once('\'').map(|(value, _)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = r#"-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)
--
-- Position to start replication or point-in-time recovery from
--

-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000003', MASTER_LOG_POS=1234;

--
-- GTID to start replication from
--

-- SET GLOBAL gtid_slave_pos='0-1-42';

CREATE DATABASE /*!32312 IF NOT EXISTS*/ `app` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;

USE `app`;
CREATE TABLE `invoices` (
  `id` int(11) NOT NULL,
  `note` text DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB;
INSERT INTO `invoices` VALUES
(1,'it\'s (fine); really'),
(2,NULL),
(3,'a),(b');
INSERT INTO `invoices` VALUES (4,0x00FF);
CREATE TABLE `empty``one` (
  `id` int(11) NOT NULL
) ENGINE=InnoDB;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER app.inv_bi BEFORE INSERT ON `invoices` FOR EACH ROW SET NEW.note = NEW.note */;;
/*!50106 CREATE*/ /*!50117 DEFINER=`root`@`localhost`*/ /*!50106 EVENT `nightly` ON SCHEDULE EVERY 1 DAY STARTS '2026-01-01 00:00:00' ON COMPLETION NOT PRESERVE ENABLE DO SELECT 1 */ ;;
CREATE DEFINER=`root`@`localhost` PROCEDURE `close_month`()
BEGIN SELECT 1; END ;;
CREATE DEFINER=`root`@`localhost` FUNCTION `fee`(x INT) RETURNS int(11)
RETURN x ;;
/*!50001 VIEW `open_invoices` AS select 1 AS `id` */;
-- Dump completed on 2026-11-26 17:46:43
"#;

    fn scan_in_chunks(text: &str, chunk: usize) -> DumpFacts {
        let mut scanner = DumpScanner::new();
        for piece in text.as_bytes().chunks(chunk) {
            scanner.feed(piece);
        }
        scanner.finish()
    }

    #[test]
    fn finds_objects_rows_and_coordinates() {
        let facts = scan_in_chunks(DUMP, 1 << 20);
        assert!(facts.completed);
        let binlog = facts.binlog.unwrap();
        assert_eq!(
            (binlog.file.as_str(), binlog.position),
            ("mysql-bin.000003", 1234)
        );
        assert_eq!(binlog.gtid_position.as_deref(), Some("0-1-42"));
        let [db] = facts.expectations.databases.as_slice() else {
            panic!("one database")
        };
        assert_eq!(db.name, "app");
        let tables: Vec<_> = db
            .tables
            .iter()
            .map(|t| (t.name.as_str(), t.rows))
            .collect();
        assert_eq!(tables, vec![("invoices", 4), ("empty`one", 0)]);
        assert_eq!(db.views, vec!["open_invoices"]);
        assert_eq!(db.triggers, vec!["inv_bi"]);
        assert_eq!(db.events, vec!["nightly"]);
        assert_eq!(db.routines, vec!["close_month", "fee"]);
        let mut expected = Sha256::new();
        expected.update(b"(1,'it\\'s (fine); really')\n(2,NULL)\n(3,'a),(b')\n(4,0x00FF)\n");
        assert_eq!(db.tables[0].sha256, hex::encode(expected.finalize()));
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let whole = scan_in_chunks(DUMP, 1 << 20);
        for size in [1, 2, 3, 7, 64, 333] {
            assert_eq!(scan_in_chunks(DUMP, size), whole, "chunk size {size}");
        }
    }

    #[test]
    fn a_truncated_dump_is_not_complete() {
        let cut = &DUMP[..DUMP.find("-- Dump completed").unwrap()];
        assert!(!scan_in_chunks(cut, 4096).completed);
    }
}
