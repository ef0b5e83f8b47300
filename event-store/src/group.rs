//! Group commit: appends that arrive while others are being written are
//! written together, in one statement and one commit.
//!
//! An append that finds no other append in flight is written at once, in
//! its caller's task: there is no group to join, and handing it to another
//! task would only add two wake-ups. Otherwise it queues: a few writer
//! tasks take appends from one queue, each takes whatever has queued up
//! since it last looked (no timer), and writes the lot with one
//! statement. Each append in a group is still all or nothing and is judged
//! on its own: one whose stream moved, or whose events are already stored,
//! is left out of the group and the others are written. What a group
//! leaves out, and any append that shares a stream or an event id with an
//! earlier one in the group, goes back to its caller, which appends it
//! alone: the single-append path tells a conflict from a repeat and
//! retries lost races, exactly as without grouping.
//!
//! Under load this turns many small transactions into a few larger ones:
//! PostgreSQL's cost per statement and per commit (planning, executor
//! start-up, the commit record and its flush) is paid once per group.
//!
//! [`EventStore::append`] and [`EventStore::append_each`] enter here; the
//! statements themselves are `append`'s, which knows nothing of groups.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use crate::append::{self, AppendError, Columns};
use crate::notify::Notifier;
use crate::{Appended, EventStore, ExpectedVersion, Result, StreamAppend};

impl EventStore {
    /// Appends events to one or more streams, all or nothing, and returns
    /// each event's version and position in the order given.
    ///
    /// Fails with [`Error::ConcurrencyConflict`] when a stream is not at its
    /// expected version. When every event id is already stored with the same
    /// stream, type and data, returns the original result and writes nothing.
    ///
    /// Appends that arrive while others are being written are written
    /// together with them (group commit, see `group`); each is still judged
    /// on its own.
    pub async fn append(&self, appends: &[StreamAppend]) -> Result<Vec<Appended>> {
        async {
            append::validate(appends)?;
            // Nothing else being written: there is no group to join, so
            // the caller writes at once, without a hand-over to a writer.
            let in_flight = self.group.enter();
            if in_flight.alone {
                return append::append_alone(&self.pool, &self.notifier, appends).await;
            }
            match self.group.submit(appends.to_vec()).await {
                Joined::Written(result) => result,
                Joined::Alone => append::append_alone(&self.pool, &self.notifier, appends).await,
            }
        }
        .instrument(append::span(appends))
        .await
    }

    /// Several independent appends at once. Each is all or nothing and
    /// succeeds or fails on its own, as if appended one after the other
    /// with [`EventStore::append`]; those that can are written together in
    /// one statement. Results come in the order given.
    #[tracing::instrument(
        name = "event_store.append_each",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql", appends = appends.len())
    )]
    pub async fn append_each(&self, appends: &[Vec<StreamAppend>]) -> Vec<Result<Vec<Appended>>> {
        let mut results: Vec<Option<Result<Vec<Appended>>>> = appends
            .iter()
            .map(|appends| append::validate(appends).err().map(Err))
            .collect();
        let valid: Vec<(usize, &[StreamAppend])> = appends
            .iter()
            .enumerate()
            .filter(|(i, _)| results[*i].is_none())
            .map(|(i, appends)| (i, appends.as_slice()))
            .collect();
        let slices: Vec<&[StreamAppend]> = valid.iter().map(|(_, appends)| *appends).collect();
        let written = write_together(&self.pool, &self.notifier, &slices).await;
        for ((i, appends), written) in valid.into_iter().zip(written) {
            results[i] = Some(match written {
                Some(events) => Ok(events),
                None => append::append_alone(&self.pool, &self.notifier, appends).await,
            });
        }
        results
            .into_iter()
            .map(|result| result.expect("every append has a result"))
            .collect()
    }
}

/// Writer tasks: two groups in flight, one being written while the next
/// queues up. More writers make smaller groups and more transactions
/// competing for the same cores, and more writers measured slower, not
/// faster (BENCHMARKS.md).
const WRITERS: usize = 2;
/// At most this many appends, or about this many events, in one group.
const MAX_APPENDS: usize = 64;
const MAX_EVENTS: usize = 1000;
/// Appends waiting for a writer; a caller beyond this waits to queue.
const QUEUE: usize = 1024;

/// The queue in front of the writer tasks.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Request>,
    /// Appends being written now, alone or grouped: an append that finds
    /// none goes alone at once (see [`GroupCommit::enter`]).
    in_flight: Arc<AtomicUsize>,
}

/// An append counted in [`GroupCommit`]'s `in_flight` until dropped.
pub(crate) struct InFlight {
    count: Arc<AtomicUsize>,
    /// No other append was in flight when this one entered.
    pub(crate) alone: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Request {
    appends: Vec<StreamAppend>,
    reply: oneshot::Sender<Joined>,
}

/// What became of an append handed to [`GroupCommit::submit`].
pub(crate) enum Joined {
    /// Written (or refused) by a writer, alone or in a group.
    Written(Result<Vec<Appended>>),
    /// Not written: the caller appends it alone.
    Alone,
}

impl GroupCommit {
    /// Starts the writer tasks; they end when every handle is dropped.
    pub(crate) fn start(pool: PgPool, notifier: Notifier) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        let requests = Arc::new(Mutex::new(requests));
        for _ in 0..WRITERS {
            tokio::spawn(write(pool.clone(), notifier.clone(), requests.clone()));
        }
        Self {
            queue,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Counts an append in flight until the guard drops, and says whether
    /// it is alone. A lone append is written in its caller's task: a
    /// hand-over to a writer task would cost a wake-up each way, and there
    /// is nobody to share a commit with. One that finds others in flight
    /// queues, to join the next group.
    pub(crate) fn enter(&self) -> InFlight {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            count: self.in_flight.clone(),
            alone: before == 0,
        }
    }

    /// Queues a validated append and waits until a writer has dealt with
    /// it.
    pub(crate) async fn submit(&self, appends: Vec<StreamAppend>) -> Joined {
        let (reply, joined) = oneshot::channel();
        if self.queue.send(Request { appends, reply }).await.is_err() {
            return Joined::Alone;
        }
        // A writer that went away (the runtime shutting down) leaves the
        // append to its caller; had it been written, appending it again is
        // recognised as a repeat.
        joined.await.unwrap_or(Joined::Alone)
    }
}

/// One writer: takes what has queued up and writes it, until the queue
/// closes.
async fn write(pool: PgPool, notifier: Notifier, requests: Arc<Mutex<mpsc::Receiver<Request>>>) {
    loop {
        let group = {
            let mut requests = requests.lock().await;
            let Some(first) = requests.recv().await else {
                return;
            };
            let mut events = event_count(&first.appends);
            let mut group = vec![first];
            while group.len() < MAX_APPENDS && events < MAX_EVENTS {
                let Ok(next) = requests.try_recv() else {
                    break;
                };
                events += event_count(&next.appends);
                group.push(next);
            }
            group
        };
        if let [_] = group.as_slice() {
            let request = group.into_iter().next().expect("one request");
            let result = append::append_alone(&pool, &notifier, &request.appends).await;
            let _ = request.reply.send(Joined::Written(result));
            continue;
        }
        let appends: Vec<&[StreamAppend]> = group.iter().map(|r| r.appends.as_slice()).collect();
        let written = write_together(&pool, &notifier, &appends).await;
        for (request, written) in group.into_iter().zip(written) {
            let joined = match written {
                Some(events) => Joined::Written(Ok(events)),
                None => Joined::Alone,
            };
            let _ = request.reply.send(joined);
        }
    }
}

fn event_count(appends: &[StreamAppend]) -> usize {
    appends.iter().map(|a| a.events.len()).sum()
}

/// Writes validated, independent appends together where it can. Returns,
/// for each, its stored events, or `None` when it was not written and must
/// be appended alone (it shares a stream or an event id with an earlier
/// one, its stream moved, its events were already stored, or the group's
/// statement failed as a whole).
pub(crate) async fn write_together(
    pool: &PgPool,
    notifier: &Notifier,
    appends: &[&[StreamAppend]],
) -> Vec<Option<Vec<Appended>>> {
    let joins = disjoint(appends);
    let together: Vec<&[StreamAppend]> = appends
        .iter()
        .zip(&joins)
        .filter(|(_, joins)| **joins)
        .map(|(appends, _)| *appends)
        .collect();
    let mut written = HashMap::new();
    if together.len() > 1 {
        match insert(pool, &together).await {
            Ok(events) => written = events,
            // A concurrent append outside the group took a version or an
            // event id, or the database failed: each goes alone and gets
            // its own answer.
            Err(error) => tracing::debug!(%error, "a group of appends goes alone"),
        }
    }
    if !written.is_empty() {
        notifier.appended();
    }
    appends
        .iter()
        .map(|appends| {
            appends
                .iter()
                .flat_map(|a| &a.events)
                .map(|event| written.get(&event.event_id).copied())
                .collect()
        })
        .collect()
}

/// Which appends may join the group: those that share no stream and no
/// event id with an earlier one.
fn disjoint(appends: &[&[StreamAppend]]) -> Vec<bool> {
    let mut streams: HashSet<&str> = HashSet::new();
    let mut ids: HashSet<Uuid> = HashSet::new();
    appends
        .iter()
        .map(|appends| {
            let clashes = appends.iter().any(|a| {
                streams.contains(a.stream_id.as_str())
                    || a.events.iter().any(|e| ids.contains(&e.event_id))
            });
            if !clashes {
                for append in appends.iter() {
                    streams.insert(append.stream_id.as_str());
                    ids.extend(append.events.iter().map(|e| e.event_id));
                }
            }
            !clashes
        })
        .collect()
}

async fn insert(
    pool: &PgPool,
    together: &[&[StreamAppend]],
) -> Result<HashMap<Uuid, Appended>, AppendError> {
    let mut conn = pool.acquire().await?;
    let all_new = together
        .iter()
        .flat_map(|appends| appends.iter())
        .all(|a| a.expected == ExpectedVersion::NoStream);
    if all_new {
        // Every stream must be new: a plain insert, which fails as a whole
        // if any of them exists.
        let columns = Columns::of_each(together.iter().copied());
        let events = append::insert_new_streams(&mut conn, &columns).await?;
        return Ok(events.into_iter().map(|e| (e.event_id, e)).collect());
    }
    append::insert_grouped(&mut conn, together).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Metadata, NewEvent};

    fn append(stream: &str, event: &NewEvent) -> StreamAppend {
        StreamAppend::new(stream, ExpectedVersion::Any, vec![event.clone()])
    }

    #[test]
    fn an_append_sharing_a_stream_or_an_event_id_with_an_earlier_one_goes_alone() {
        let [a, b, c] =
            [1, 2, 3].map(|n| NewEvent::new("E", json!({ "n": n }), Metadata::default()));
        let first = [append("s-1", &a), append("s-2", &b)];
        let same_stream = [append("s-2", &c)];
        let same_event = [append("s-3", &a)];
        let unrelated = [append("s-3", &c)];
        let appends: Vec<&[StreamAppend]> = vec![&first, &same_stream, &same_event, &unrelated];
        assert_eq!(disjoint(&appends), [true, false, false, true]);
    }
}
