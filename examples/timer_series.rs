//! Series, parallel, context, timer and go tasks without any network.
//!
//! A series of three steps shares a `Trip` context: a timer, a parallel of three
//! series that each compute on the compute pool after their own timer, and a
//! last step that reads what the parallel gathered.
//!
//! `cargo run --example timer_series`

use std::time::{Duration, Instant};
use taskweave::task::FnTask;
use taskweave::{go, timer, Parallel, Series, WaitGroup};

/// The series context: what the steps tell each other.
#[derive(Default)]
struct Trip {
    started: Option<Instant>,
    sums: Vec<u64>,
}

fn worker(n: u64) -> Series {
    // Each member has its own context: the sum it computes.
    let wait = timer(Duration::from_millis(10 * n), move |_, s: &mut Series| {
        s.push_back(go(
            move || (1..=n * 1_000_000).sum::<u64>(),
            |t, s: &mut Series| *s.context_mut::<u64>() = t.take_output().unwrap_or(0),
        ));
    });
    Series::with_context(wait, 0u64)
}

fn main() {
    let wg = WaitGroup::new(1);
    let done = wg.clone();

    let first = timer(Duration::from_millis(20), |_, s: &mut Series| {
        s.context_mut::<Trip>().started = Some(Instant::now());
        println!("timer fired; starting three workers side by side");
    });
    let mut series = Series::with_context(first, Trip::default());

    let mut par = Parallel::new(|p, s: &mut Series| {
        // The parallel's callback sees every member series and its context.
        let sums: Vec<u64> = p.series_mut().map(|m| *m.context::<u64>()).collect();
        s.context_mut::<Trip>().sums = sums;
    });
    for n in 1..=3 {
        par.add(worker(n));
    }
    series.push_back(par);
    series.push_back(FnTask(|s: &mut Series| {
        let trip = s.context::<Trip>();
        let took = trip.started.map(|t| t.elapsed()).unwrap_or_default();
        println!(
            "sums {:?} after {:.1} ms",
            trip.sums,
            took.as_secs_f64() * 1e3
        );
    }));
    series
        .on_done(move |_| {
            println!("series done");
            done.done();
        })
        .start();
    wg.wait();
}
