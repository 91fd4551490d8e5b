use std::{
    num::NonZeroUsize,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, Mutex, PoisonError, mpsc},
    thread,
};

use anyhow::{Context, anyhow};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::ServiceError;
use crate::domain::Password;

/// Jobs that may wait per hashing thread. At the default cost (~250 ms a hash) the last of
/// them is answered after about 8 s, still within a client's usual timeout; a deeper queue
/// would only make callers wait for answers they have given up on, a shallower one would
/// turn short bursts (a page of logins at once) into 503s.
const QUEUE_PER_THREAD: NonZeroUsize = NonZeroUsize::new(32).unwrap();

/// bcrypt at the configured cost. Hashing takes hundreds of milliseconds at cost 12, so it
/// runs on a pool of its own (see [`HashingPool`]): on an async worker it would stall every
/// request behind it, and on tokio's blocking pool a storm of logins grows hundreds of
/// threads that take the CPU from everything else.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    /// Verified against when the user is unknown, so that a failed login takes as long
    /// whether or not the account exists.
    dummy_hash: String,
    pool: HashingPool,
}

impl PasswordHasher {
    /// One hashing thread per core, with [`QUEUE_PER_THREAD`] jobs waiting for each.
    pub async fn new(cost: u32) -> anyhow::Result<Self> {
        let threads = thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        let queue = threads.saturating_mul(QUEUE_PER_THREAD);
        Self::with_pool(cost, threads, queue).await
    }

    /// `threads` hashing threads, and at most `queue` jobs waiting for them.
    pub async fn with_pool(
        cost: u32,
        threads: NonZeroUsize,
        queue: NonZeroUsize,
    ) -> anyhow::Result<Self> {
        let pool = HashingPool::start(threads, queue)?;
        let dummy_hash = pool
            .run(move || bcrypt::hash("dummy password", cost))
            .await?
            .context("bcrypt refused the configured cost")?;
        Ok(Self {
            cost,
            dummy_hash,
            pool,
        })
    }

    /// [`ServiceError::Busy`] when the hashing queue is full.
    pub async fn hash(&self, password: &Password) -> Result<String, ServiceError> {
        let password = password.clone();
        let cost = self.cost;
        // `Password` is at most 72 bytes, all of which bcrypt reads.
        self.pool
            .run(move || bcrypt::hash(password.expose(), cost))
            .await?
            .map_err(ServiceError::internal)
    }

    /// Checks `password` against `hash`; a malformed stored hash simply does not match.
    /// [`ServiceError::Busy`] when the hashing queue is full.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, ServiceError> {
        self.verify_in(self.reserve()?, password, hash).await
    }

    /// A place in the hashing queue, taken before anything else is done for a request (a
    /// login counts its attempt only once it is sure to be checked); dropped unused, it is
    /// given back. [`ServiceError::Busy`] when the queue is full.
    pub fn reserve(&self) -> Result<HashSlot, ServiceError> {
        self.pool.reserve()
    }

    /// [`PasswordHasher::verify`] in a place reserved before.
    pub async fn verify_in(
        &self,
        slot: HashSlot,
        password: &str,
        hash: Option<&str>,
    ) -> Result<bool, ServiceError> {
        let password = password.to_owned();
        let (hash, real) = match hash {
            Some(hash) => (hash.to_owned(), true),
            None => (self.dummy_hash.clone(), false),
        };
        // bcrypt reads 72 bytes: a longer attempt that starts with the password would match.
        // It never may; it is still checked, so that refusing it takes the same time.
        let too_long = password.len() > Password::MAX_BYTES;
        let matched = self
            .pool
            .run_in(slot, move || {
                bcrypt::verify(password, &hash).unwrap_or(false)
            })
            .await?;
        Ok(real && matched && !too_long)
    }

    /// True when `hash` was made with a lower cost than configured now.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        hash_cost(hash).is_some_and(|cost| cost < self.cost)
    }
}

/// The cost field of a `$2b$12$...` hash.
fn hash_cost(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed number of OS threads at low priority, fed through a bounded queue. The threads
/// bound the CPU that hashing takes, the low priority lets the async workers go first, and
/// the bound on the queue turns overload into an immediate [`ServiceError::Busy`] rather
/// than into ever longer waits. Clones share the queue; the threads end once the last clone
/// is gone (in the service, at exit).
#[derive(Clone)]
struct HashingPool {
    jobs: mpsc::SyncSender<Job>,
    /// Places for jobs queued or running: the bound, taken before a job is sent.
    room: Arc<Semaphore>,
}

/// A reserved place in the hashing queue (see [`PasswordHasher::reserve`]).
pub struct HashSlot {
    /// Held for as long as the place is taken.
    _permit: OwnedSemaphorePermit,
}

impl HashingPool {
    fn start(threads: NonZeroUsize, queue: NonZeroUsize) -> anyhow::Result<Self> {
        // Room for every job the threads run and the queue holds: sending never blocks,
        // as `room` admits no more.
        let places = threads.get() + queue.get();
        let (jobs, waiting) = mpsc::sync_channel::<Job>(places);
        // std's receiver has a single owner: the threads take turns at it.
        let waiting = Arc::new(Mutex::new(waiting));
        for n in 0..threads.get() {
            let waiting = Arc::clone(&waiting);
            thread::Builder::new()
                .name(format!("bcrypt-{n}"))
                .spawn(move || work(&waiting))
                .context("cannot start a password-hashing thread")?;
        }
        Ok(Self {
            jobs,
            room: Arc::new(Semaphore::new(places)),
        })
    }

    fn reserve(&self) -> Result<HashSlot, ServiceError> {
        Arc::clone(&self.room)
            .try_acquire_owned()
            .map(|permit| HashSlot { _permit: permit })
            .map_err(|_| ServiceError::Busy)
    }

    /// Runs `f` on a pool thread, in the caller's span so that it logs with the request id.
    /// Never waits for room: a full queue is [`ServiceError::Busy`] at once.
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, ServiceError> {
        self.run_in(self.reserve()?, f).await
    }

    /// [`HashingPool::run`] in a place reserved before; the place is given back once the
    /// job is done (or skipped).
    async fn run_in<R: Send + 'static>(
        &self,
        slot: HashSlot,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            // A caller that has gone (its client hung up) wants no answer: skip the work.
            if !reply.is_closed() {
                let result = span.in_scope(f);
                // The place is free before the caller hears back, so that it may take it.
                drop(slot);
                let _ = reply.send(result);
            }
        });
        self.jobs.try_send(job).map_err(|error| match error {
            // Cannot happen while `room` bounds the jobs to the channel's capacity.
            mpsc::TrySendError::Full(_) => ServiceError::Busy,
            mpsc::TrySendError::Disconnected(_) => {
                ServiceError::internal(anyhow!("the password-hashing threads are gone"))
            }
        })?;
        answer
            .await
            .map_err(|_| ServiceError::internal(anyhow!("a password-hashing job panicked")))
    }
}

/// One pool thread: jobs until every sender is gone.
fn work(waiting: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    loop {
        // The lock is held while waiting for a job, never while running one.
        let job = waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok(job) = job else { return };
        // A panic loses that job's answer (its caller gets an internal error), not the thread.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

/// Nice 10 for the calling thread, so that during a storm of logins the async workers
/// (nice 0) still get the CPU first and other requests stay fast.
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: system calls about the calling thread alone, with no pointers.
    let tid = unsafe { libc::gettid() };
    // On Linux, PRIO_PROCESS with a thread id sets the nice value of that thread alone.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) } != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the priority of a password-hashing thread"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use std::{
        pin::{Pin, pin},
        sync::atomic::{AtomicBool, Ordering},
        task::Poll,
    };

    use futures_util::FutureExt;

    use super::*;

    /// Polls `future` once: enough for a pool call to queue its job or be refused.
    async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
    }

    #[tokio::test]
    async fn hashes_verify_and_report_their_cost() {
        let hasher = PasswordHasher::new(4).await.unwrap();
        let password = Password::parse("correct horse").unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hasher.verify("correct horse", Some(&hash)).await.unwrap());
        assert!(!hasher.verify("wrong horse!", Some(&hash)).await.unwrap());
        assert!(!hasher.verify("correct horse", None).await.unwrap());
        assert!(
            !hasher
                .verify("correct horse", Some("not a hash"))
                .await
                .unwrap()
        );
        // bcrypt reads 72 bytes; a longer attempt that starts with the password is no match.
        let long = Password::parse(&"x".repeat(72)).unwrap();
        let long_hash = hasher.hash(&long).await.unwrap();
        assert!(
            hasher
                .verify(&"x".repeat(72), Some(&long_hash))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(&"x".repeat(73), Some(&long_hash))
                .await
                .unwrap()
        );
        assert_eq!(hash_cost(&hash), Some(4));
        assert!(!hasher.needs_rehash(&hash));
        let stronger = PasswordHasher::new(5).await.unwrap();
        assert!(stronger.needs_rehash(&hash));
    }

    #[tokio::test]
    async fn a_reserved_place_is_kept_until_used_or_dropped() {
        let hasher = PasswordHasher::with_pool(4, NonZeroUsize::MIN, NonZeroUsize::MIN)
            .await
            .unwrap();
        // One thread and one waiting job: two places.
        let first = hasher.reserve().unwrap();
        let second = hasher.reserve().unwrap();
        assert!(matches!(hasher.reserve(), Err(ServiceError::Busy)));
        assert!(matches!(
            hasher.verify("correct horse", None).await,
            Err(ServiceError::Busy)
        ));
        drop(first);
        assert!(
            !hasher
                .verify_in(second, "correct horse", None)
                .await
                .unwrap()
        );
        // Both places are free again.
        let _a = hasher.reserve().unwrap();
        let _b = hasher.reserve().unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_drains() {
        let hasher = PasswordHasher::with_pool(4, NonZeroUsize::MIN, NonZeroUsize::MIN)
            .await
            .unwrap();
        let password = Password::parse("correct horse").unwrap();
        // A job holds the only thread until released.
        let (started_tx, started) = oneshot::channel();
        let (release, released) = mpsc::channel::<()>();
        let mut blocker = pin!(hasher.pool.run(move || {
            started_tx.send(()).unwrap();
            released.recv().unwrap();
        }));
        assert!(poll_once(blocker.as_mut()).await.is_pending());
        started.await.unwrap();
        // A second fills the queue of one.
        let mut queued = pin!(hasher.hash(&password));
        assert!(poll_once(queued.as_mut()).await.is_pending());
        // Further ones are refused on their first poll, and are not kept.
        let ran = Arc::new(AtomicBool::new(false));
        let refused = hasher.pool.run({
            let ran = Arc::clone(&ran);
            move || ran.store(true, Ordering::SeqCst)
        });
        assert!(matches!(
            refused.now_or_never(),
            Some(Err(ServiceError::Busy))
        ));
        assert!(matches!(
            hasher.verify("correct horse", None).now_or_never(),
            Some(Err(ServiceError::Busy))
        ));
        let user_hash = hasher.hash(&password).now_or_never();
        assert!(matches!(user_hash, Some(Err(ServiceError::Busy))));

        release.send(()).unwrap();
        blocker.await.unwrap();
        let hash = queued.await.unwrap();
        assert!(hasher.verify("correct horse", Some(&hash)).await.unwrap());
        // Everything queued after the refusals has run: the refused job never will.
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pool_threads_run_at_nice_10_and_leave_the_caller_alone() {
        // SAFETY: system calls about the calling thread alone, with no pointers.
        let nice_here = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice_here();
        let hasher = PasswordHasher::with_pool(4, NonZeroUsize::MIN, NonZeroUsize::MIN)
            .await
            .unwrap();
        // SAFETY: as above; the thread id is the pool thread's own.
        let in_pool = hasher
            .pool
            .run(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) })
            .await
            .unwrap();
        // Without privilege a thread cannot go below the nice value it started with.
        assert_eq!(in_pool, before.max(10));
        assert_eq!(nice_here(), before);
    }
}
