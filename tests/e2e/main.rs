//! End-to-end tests: the real `coffer` binary against a real MariaDB (a sandbox `mariadbd` with a
//! binary log) and real S3 servers (s3s-fs, Garage), all started once for this test binary.

mod awkward_names;
mod backup_folder;
mod backup_s3;
mod binlog_archive;
mod binlog_find;
mod binlog_stream;
mod catalog;
mod config_history;
mod daemon;
mod drill;
mod failures;
mod faults;
mod files;
mod files_s3;
mod lock;
mod pitr;
mod privileges;
mod prune;
mod restore;
mod secrets;
mod signing;
mod stall;
mod storage;
mod tls;
mod util;
