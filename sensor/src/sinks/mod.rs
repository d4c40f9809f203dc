//! Where events go once numbered: the journal, the live hub, the exporters.

pub mod export;
pub mod hub;
pub mod journal;
