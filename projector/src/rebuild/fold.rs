//! The in-memory fold of a rebuild: each read model being rebuilt folds
//! the whole log into its rows, which are then written into its shadow
//! table in bulk.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use anyhow::Context;
use event_store::RawEvent;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Progressing, WRITERS, stored_dead_letter};
use crate::store::{self, DeadLetter};
use crate::views::{Declaration, Projection, View, WithView};

/// One projection folded in memory: its rows by stream.
///
/// Each row is boxed: a rebuild holds every row of every read model being
/// rebuilt at once, and the map's spare capacity (up to half of it after
/// it grows) then costs a pointer per slot instead of a whole row. For the
/// same reason a stream whose key is a UUID (`order-<uuid>`) is held by
/// that UUID, not by its id's text.
struct Fold<V> {
    projection: Projection,
    by_uuid: HashMap<Uuid, Option<Box<V>>>,
    by_id: HashMap<Box<str>, Option<Box<V>>>,
    events: u64,
    position: i64,
    refused: Vec<DeadLetter>,
}

impl<V: View> Fold<V> {
    fn new(projection: Projection) -> Self {
        Self {
            projection,
            by_uuid: HashMap::new(),
            by_id: HashMap::new(),
            events: 0,
            position: 0,
            refused: Vec::new(),
        }
    }

    /// The row of an event's stream (`None` until its first event), or why
    /// the stream cannot be a row of this read model.
    fn row(&mut self, stream_id: &str) -> Result<&mut Option<Box<V>>, String> {
        let declaration = V::DECLARATION;
        if declaration.key.1 == "uuid" {
            let key = stream_id
                .strip_prefix(declaration.stream_prefix)
                .and_then(|key| Uuid::parse_str(key).ok());
            return match key {
                Some(key) => Ok(self.by_uuid.entry(key).or_default()),
                // Says why, as a live write would.
                None => Err(store::key_of(&declaration, stream_id)
                    .err()
                    .unwrap_or_else(|| format!("{stream_id}: not a key"))),
            };
        }
        // A stream's id is checked once, when first seen (this is the hot
        // loop of a rebuild).
        if !self.by_id.contains_key(stream_id) {
            store::key_of(&declaration, stream_id)?;
            self.by_id.insert(stream_id.into(), None);
        }
        Ok(self.by_id.get_mut(stream_id).expect("inserted above"))
    }

    fn apply(&mut self, event: &RawEvent) {
        let row = match self.row(&event.stream_id) {
            Ok(row) => row,
            Err(reason) => {
                self.refused
                    .push(stored_dead_letter(event.position, reason));
                return;
            }
        };
        let current = row.as_deref().map_or(0, V::version);
        // The global order keeps each stream's versions in order (a
        // stream's next version is appended by a later transaction), so
        // anything else is refused rather than guessed at.
        if event.version != current + 1 {
            self.refused.push(stored_dead_letter(
                event.position,
                format!(
                    "{} version {} follows version {current}",
                    event.stream_id, event.version
                ),
            ));
            return;
        }
        // `View::apply`, on a boxed row.
        let applied = match row {
            None => V::create(event).map(|created| *row = Some(Box::new(created))),
            Some(existing) => existing.update(event),
        };
        match applied {
            Ok(()) => {
                self.events += 1;
                self.position = self.position.max(event.position);
            }
            Err(error) => self
                .refused
                .push(stored_dead_letter(event.position, error.to_string())),
        }
    }

    /// Writes the folded rows into the projection's shadow table with one
    /// `COPY`, freeing each row as it is encoded, and its refused events as
    /// dead letters.
    async fn write(self, pool: PgPool) -> anyhow::Result<Folded> {
        let projection = self.projection;
        let shadow = format!("{}_shadow", projection.table());
        let mut conn = pool.acquire().await.context("writing the shadow table")?;
        let rows = self.by_uuid.into_values().chain(self.by_id.into_values());
        store::copy_new::<V, _>(&mut conn, &shadow, rows.flatten()).await?;
        store::dead_letter(&mut conn, &self.refused).await?;
        Ok(Folded {
            projection,
            events: self.events,
            position: self.position,
            refused: self.refused.len() as u64,
        })
    }
}

/// What one projection's fold applied and refused, once written.
struct Folded {
    projection: Projection,
    events: u64,
    position: i64,
    refused: u64,
}

/// A [`Fold`] of any view type.
trait Folding: Send {
    fn apply(&mut self, event: &RawEvent);

    /// Streams folded so far.
    fn rows(&self) -> usize;

    fn write(
        self: Box<Self>,
        pool: PgPool,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<Folded>> + Send>>;
}

impl<V: View> Folding for Fold<V> {
    fn apply(&mut self, event: &RawEvent) {
        Fold::apply(self, event);
    }

    fn rows(&self) -> usize {
        self.by_uuid.len() + self.by_id.len()
    }

    fn write(
        self: Box<Self>,
        pool: PgPool,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<Folded>> + Send>> {
        Box::pin(Fold::write(*self, pool))
    }
}

/// Makes an empty fold of a projection's view type.
struct NewFold(Projection);

impl WithView for NewFold {
    type Output = Box<dyn Folding>;
    fn with<V: View>(self) -> Box<dyn Folding> {
        Box::new(Fold::<V>::new(self.0))
    }
}

/// The folds of the projections being rebuilt, each with its declaration;
/// an event goes to every fold whose read model takes its stream.
pub(super) struct Folds(Vec<(Declaration, Box<dyn Folding>)>);

impl Folds {
    pub(super) fn new(projections: &[Projection]) -> Self {
        Self(
            projections
                .iter()
                .map(|&p| (p.declaration(), p.with_view(NewFold(p))))
                .collect(),
        )
    }

    pub(super) fn apply(&mut self, event: &RawEvent) {
        for (declaration, fold) in &mut self.0 {
            if declaration.takes(&event.stream_id) {
                fold.apply(event);
            }
        }
    }

    /// Writes every fold into its shadow table, up to [`WRITERS`] tables
    /// at once (one `COPY` each: several into one table would queue for
    /// its extension lock), the largest first.
    pub(super) async fn write(self, pool: &PgPool) -> anyhow::Result<Progressing> {
        let mut report = Progressing::default();
        let mut folds: Vec<Box<dyn Folding>> = self.0.into_iter().map(|(_, fold)| fold).collect();
        folds.sort_by_key(|fold| std::cmp::Reverse(fold.rows()));
        let mut folds = folds.into_iter();
        let mut writing = tokio::task::JoinSet::new();
        loop {
            while writing.len() < WRITERS {
                let Some(fold) = folds.next() else { break };
                writing.spawn(fold.write(pool.clone()));
            }
            let Some(written) = writing.join_next().await else {
                break;
            };
            let written = written.context("a shadow writer panicked")??;
            report.report.refused += written.refused;
            report.add(written.projection, written.events, written.position);
        }
        Ok(report)
    }
}
