//! `kcl-multilang` — the KCL MultiLangDaemon without a JVM.
//!
//! Python, Node.js and Ruby record processors (amazon-kclpy, aws-kcl,
//! aws-kclrb) speak the MultiLang protocol, JSON lines on their stdin and
//! stdout, to a daemon that holds the shard leases and launches one child
//! process per leased shard. This crate is that daemon on top of [`kcl`]:
//! the same properties file ([`properties`], [`config`]), the same messages
//! ([`messages`]), one child per lease ([`child`], [`processor`]) — and a
//! failure of one child ends only that child's shard, where the Java daemon
//! exits its JVM and every shard with it.
//!
//! The binary: `kcl-multilang --properties-file app.properties` (or `-p`,
//! or the file as the only argument), as `java ... MultiLangDaemon`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod child;
pub mod config;
pub mod messages;
pub mod processor;
pub mod properties;
