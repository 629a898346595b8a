//! Series, parallel, context, cancel, go, timer and counter tasks.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use taskweave::task::{count_by_name, counter, go, named_counter, timer, FnTask, Parallel};
use taskweave::{Series, WaitGroup};

const WAIT: Duration = Duration::from_secs(10);

fn run(series: Series) -> Arc<Mutex<Option<Series>>> {
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let out = Arc::new(Mutex::new(None));
    let slot = out.clone();
    series
        .on_done(move |s| {
            *slot.lock().unwrap() = Some(std::mem::take(s));
            done.done();
        })
        .start();
    assert!(wg.wait_timeout(WAIT), "series did not finish");
    out
}

#[test]
fn series_runs_in_order_with_push_front_and_context() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let first = FnTask(move |s: &mut Series| {
        l.lock().unwrap().push("a");
        let l2 = l.clone();
        let l3 = l.clone();
        s.push_back(FnTask(move |_: &mut Series| l2.lock().unwrap().push("c")));
        s.push_front(FnTask(move |s: &mut Series| {
            l3.lock().unwrap().push("b");
            s.context_mut::<Vec<u32>>().push(7);
        }));
    });
    let out = run(Series::with_context(first, Vec::<u32>::new()));
    assert_eq!(*log.lock().unwrap(), vec!["a", "b", "c"]);
    let _ = out;
}

#[test]
fn context_is_shared_across_async_tasks() {
    let t1 = timer(Duration::from_millis(5), |_, s: &mut Series| {
        *s.context_mut::<u32>() += 1;
        s.push_back(go(
            || 40 + 2,
            |g, s: &mut Series| {
                let v = g.take_output().unwrap();
                *s.context_mut::<u32>() += v;
            },
        ));
    });
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let seen = Arc::new(AtomicU32::new(0));
    let seen2 = seen.clone();
    Series::with_context(t1, 0u32)
        .on_done(move |s| {
            seen2.store(*s.context::<u32>(), Ordering::SeqCst);
            done.done();
        })
        .start();
    assert!(wg.wait_timeout(WAIT));
    assert_eq!(seen.load(Ordering::SeqCst), 43);
}

#[test]
fn cancel_drops_the_rest_but_runs_on_done() {
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let mut s = Series::new(FnTask(move |s: &mut Series| {
        r.fetch_add(1, Ordering::SeqCst);
        s.cancel();
    }));
    for _ in 0..5 {
        let r = ran.clone();
        s.push_back(FnTask(move |_: &mut Series| {
            r.fetch_add(100, Ordering::SeqCst);
        }));
    }
    let out = run(s);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(out.lock().unwrap().as_ref().unwrap().is_cancelled());
}

#[test]
fn a_million_synchronous_tasks_do_not_overflow_the_stack() {
    let n = Arc::new(AtomicUsize::new(0));
    let mut s = Series::empty();
    for _ in 0..1_000_000 {
        let n = n.clone();
        s.push_back(FnTask(move |_: &mut Series| {
            n.fetch_add(1, Ordering::Relaxed);
        }));
    }
    // Run on a thread with a small stack: recursion per task would overflow it.
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            run(s);
        })
        .unwrap();
    handle.join().unwrap();
    assert_eq!(n.load(Ordering::Relaxed), 1_000_000);
}

#[test]
fn a_million_task_series_grown_from_callbacks() {
    fn step(left: u32) -> FnTask<impl FnOnce(&mut Series) + Send> {
        FnTask(move |s: &mut Series| {
            *s.context_mut::<u32>() += 1;
            if left > 1 {
                s.push_back(step(left - 1));
            }
        })
    }
    let out = run(Series::with_context(step(1_000_000), 0u32));
    let s = out.lock().unwrap().take().unwrap();
    assert_eq!(*s.context::<u32>(), 1_000_000);
}

#[test]
fn parallel_joins_all_series_and_sees_their_contexts() {
    let mut par = Parallel::new(|p, parent: &mut Series| {
        let sum: u64 = p.series_mut().map(|s| *s.context::<u64>()).sum();
        *parent.context_mut::<u64>() = sum;
    });
    for i in 0..10u64 {
        let t = timer(Duration::from_millis(10 - i), move |_, s: &mut Series| {
            *s.context_mut::<u64>() = i * i;
        });
        par.add(Series::with_context(t, 0u64));
    }
    // A member that ends synchronously and an empty parallel, too.
    par.add(Series::with_context(FnTask(|_: &mut Series| {}), 1000u64));
    let out = run(Series::with_context(par, 0u64));
    let s = out.lock().unwrap().take().unwrap();
    assert_eq!(*s.context::<u64>(), 285 + 1000);
}

#[test]
fn nested_synchronous_parallels_in_a_long_series() {
    let mut s = Series::with_context(FnTask(|_: &mut Series| {}), 0u32);
    for _ in 0..100_000 {
        let inner = Series::new(FnTask(|_: &mut Series| {}));
        s.push_back(
            Parallel::new(|_, parent: &mut Series| *parent.context_mut::<u32>() += 1).with(inner),
        );
    }
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || run(s).lock().unwrap().take().map(|s| *s.context::<u32>()))
        .unwrap();
    assert_eq!(handle.join().unwrap(), Some(100_000));
}

#[test]
fn timers_fire_in_deadline_order_and_not_early() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut par = Parallel::new(|_, _| {});
    for ms in [30u64, 10, 20] {
        let o = order.clone();
        par.add(Series::new(timer(
            Duration::from_millis(ms),
            move |t, _| {
                assert!(!t.cancelled());
                assert!(start.elapsed() >= Duration::from_millis(ms));
                o.lock().unwrap().push(ms);
            },
        )));
    }
    run(Series::new(par));
    assert_eq!(*order.lock().unwrap(), vec![10, 20, 30]);
}

#[test]
fn timer_cancel_completes_it_early() {
    let t = timer(Duration::from_secs(3600), |t, s: &mut Series| {
        *s.context_mut::<bool>() = t.cancelled();
    });
    let handle = t.handle();
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    Series::with_context(t, false)
        .on_done(move |s| {
            *seen2.lock().unwrap() = Some(*s.context::<bool>());
            done.done();
        })
        .start();
    std::thread::sleep(Duration::from_millis(20));
    handle.cancel();
    assert!(wg.wait_timeout(WAIT), "cancelled timer did not complete");
    assert_eq!(*seen.lock().unwrap(), Some(true));
}

#[test]
fn timer_cancelled_before_start_completes_at_once() {
    let t = timer(Duration::from_secs(3600), |t, s: &mut Series| {
        *s.context_mut::<bool>() = t.cancelled();
    });
    t.handle().cancel();
    let out = run(Series::with_context(t, false));
    assert!(*out.lock().unwrap().as_ref().unwrap().context::<bool>());
}

#[test]
fn go_tasks_run_on_compute_threads() {
    let main = std::thread::current().id();
    let t = go(
        move || std::thread::current().id() != main,
        |g, s: &mut Series| *s.context_mut::<bool>() = *g.output().unwrap(),
    );
    let out = run(Series::with_context(t, false));
    assert!(*out.lock().unwrap().as_ref().unwrap().context::<bool>());
}

#[test]
fn go_task_panic_still_runs_the_callback() {
    let t = go(
        || -> u32 { panic!("boom") },
        |g, s: &mut Series| *s.context_mut::<bool>() = g.output().is_none(),
    );
    let out = run(Series::with_context(t, false));
    assert!(*out.lock().unwrap().as_ref().unwrap().context::<bool>());
}

#[test]
fn counter_completes_after_target_counts() {
    let c = counter(3, |_, s: &mut Series| *s.context_mut::<bool>() = true);
    let h = c.handle();
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    Series::with_context(c, false)
        .on_done(move |_| done.done())
        .start();
    assert!(!h.count());
    assert!(!h.count());
    assert!(!wg.wait_timeout(Duration::from_millis(50)));
    assert!(h.count());
    assert!(wg.wait_timeout(WAIT));
}

#[test]
fn named_counters_are_counted_oldest_first() {
    let a = named_counter("tw-test-n", 2, |_, _| {});
    let b = named_counter("tw-test-n", 1, |_, _| {});
    let wg = WaitGroup::new(2);
    let (d1, d2) = (wg.clone(), wg.clone());
    Series::new(a).on_done(move |_| d1.done()).start();
    Series::new(b).on_done(move |_| d2.done()).start();
    assert_eq!(count_by_name("tw-test-n", 1), 1);
    assert!(!wg.wait_timeout(Duration::from_millis(50)));
    assert_eq!(count_by_name("tw-test-n", 5), 2);
    assert!(wg.wait_timeout(WAIT));
    assert_eq!(count_by_name("tw-test-n", 1), 0);
}

/// A panic in any kind of callback ends its series with `Error::Panic`; the
/// tasks after it are dropped, `on_done` still runs, and the runtime lives on
/// to run the next series.
#[test]
fn a_panicking_callback_ends_its_series_and_on_done_still_runs() {
    use taskweave::Error;
    let after = Arc::new(AtomicUsize::new(0));
    let makers: Vec<Box<dyn Fn() -> Series>> = vec![
        Box::new(|| Series::new(FnTask(|_: &mut Series| panic!("fn task")))),
        Box::new(|| Series::new(timer(Duration::from_millis(1), |_, _| panic!("timer")))),
        Box::new(|| Series::new(go(|| 1, |_, _: &mut Series| panic!("go callback")))),
        Box::new(|| {
            let c = counter(1, |_, _: &mut Series| panic!("counter"));
            c.handle().count();
            Series::new(c)
        }),
        Box::new(|| Series::new(Parallel::new(|_, _: &mut Series| panic!("parallel")))),
    ];
    for make in makers {
        let mut series = make();
        let a = after.clone();
        series.push_back(FnTask(move |_: &mut Series| {
            a.fetch_add(1, Ordering::SeqCst);
        }));
        let ended = run(series);
        let ended = ended.lock().unwrap().take().expect("on_done ran");
        assert!(
            matches!(ended.error(), Some(Error::Panic(_))),
            "{:?}",
            ended.error()
        );
    }
    assert_eq!(
        after.load(Ordering::SeqCst),
        0,
        "tasks after a panic never ran"
    );
    // The runtime is whole: a timer still fires.
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    run(Series::new(timer(Duration::from_millis(1), move |_, _| {
        f.fetch_add(1, Ordering::SeqCst);
    })));
    assert_eq!(fired.load(Ordering::SeqCst), 1);
}
