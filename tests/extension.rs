//! The public extension API: subscribers to the event stream, commands, custom data stages,
//! and the live-control endpoint.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler};
use pretune::actors::events::{Command, Event};
use pretune::actors::stage::DataStage;
use pretune::actors::{Controller, Pipeline};
use pretune::batch::RawBatch;
use pretune::checkpoint::CheckpointStore;


use crate::util::{bin, eventually, free_port, load_plan, run_cli, tiny_config};

/// What the collector saw: step, learning rate, loss, arrival time.
type Seen = Arc<Mutex<Vec<(u64, f64, Option<f64>, Instant)>>>;

/// Commands to send after a given step, each after a delay.
type Script = Box<dyn Fn(u64) -> Vec<(Duration, Command)>>;

struct Collector {
    seen: Seen,
    done: Arc<Mutex<bool>>,
    ctl: Controller,
    script: Script,
}

impl Actor for Collector {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(100_000);
    }
}

impl Handler<Event> for Collector {
    type Result = ();
    fn handle(&mut self, e: Event, ctx: &mut Context<Self>) {
        match e {
            Event::StepDone(s) => {
                self.seen.lock().unwrap().push((s.step, s.lr, s.loss, Instant::now()));
                for (delay, cmd) in (self.script)(s.step) {
                    if delay.is_zero() {
                        self.ctl.send(cmd);
                    } else {
                        ctx.run_later(delay, move |act, _| act.ctl.send(cmd));
                    }
                }
            }
            Event::TrainerDone(_) => *self.done.lock().unwrap() = true,
            _ => {}
        }
    }
}

fn plan(dir: &std::path::Path, extra: &[&str]) -> pretune::plan::RunPlan {
    let cfg = tiny_config(dir);
    let mut o: Vec<String> = vec!["data.eval=[]".into(), "train.log_every=1".into(), "train.checkpoint_every=0".into()];
    o.extend(extra.iter().map(|s| s.to_string()));
    load_plan(&cfg, &o)
}

/// What the logger saw: step, loss, learning rate, when.
type Steps = Vec<(u64, f64, Option<f64>, Instant)>;

fn run_with(plan: pretune::plan::RunPlan, script: Script) -> (pretune::actors::RunSummary, Steps, bool) {
    let seen: Seen = Default::default();
    let done = Arc::new(Mutex::new(false));
    let (s2, d2) = (seen.clone(), done.clone());
    let summary = Pipeline::new(plan)
        .subscribe(move |ctl| Collector { seen: s2, done: d2, ctl, script }.start().recipient())
        .run()
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let done = *done.lock().unwrap();
    (summary, seen, done)
}

#[test]
fn a_subscriber_sees_every_step_event_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (s, seen, done) = run_with(plan(dir.path(), &["train.max_steps=25"]), Box::new(|_| vec![]));
    assert_eq!(s.steps, 25);
    assert_eq!(seen.iter().map(|x| x.0).collect::<Vec<_>>(), (1..=25).collect::<Vec<_>>());
    assert!(seen.iter().all(|x| x.2.is_some()), "log_every = 1: every step carries its loss");
    assert!(done, "the subscriber saw the phase end");
}

#[test]
fn a_stop_command_ends_the_run_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let script: Script = Box::new(|step| if step == 5 { vec![(Duration::ZERO, Command::Stop)] } else { vec![] });
    let (s, _, _) = run_with(plan(dir.path(), &["train.max_steps=5000"]), script);
    assert!(s.interrupted && s.steps >= 5 && s.steps < 5000, "{s:?}");
    let ck = s.checkpoint.expect("a checkpoint on stop");
    assert_eq!(CheckpointStore::verify(&ck).unwrap().step, s.steps);
}

#[test]
fn set_learning_rate_applies_from_a_following_step() {
    let dir = tempfile::tempdir().unwrap();
    let script: Script = Box::new(|step| if step == 3 { vec![(Duration::ZERO, Command::SetLearningRate { lr: 0.0123 })] } else { vec![] });
    let (_, seen, _) = run_with(plan(dir.path(), &["train.max_steps=30", "train.warmup_steps=0", "train.decay=\"constant\"", "train.lr=1e-3"]), script);
    let lrs: Vec<f64> = seen.iter().map(|x| x.1).collect();
    let k = lrs.iter().position(|&l| l == 0.0123).expect("the new rate took effect");
    assert!(k >= 3, "not before the command: {lrs:?}");
    assert!(lrs[..k].iter().all(|&l| l == 1e-3) && lrs[k..].iter().all(|&l| l == 0.0123), "{lrs:?}");
}

/// Records the order of step, pause and resume events, and answers `Paused` with `Resume`:
/// no sleep, the events themselves show the pause held.
struct PauseProbe {
    order: Arc<Mutex<Vec<String>>>,
    ctl: Controller,
}

impl Actor for PauseProbe {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        // Subscribers get events with `try_send`: a full mailbox would drop some.
        ctx.set_mailbox_capacity(100_000);
    }
}

impl Handler<Event> for PauseProbe {
    type Result = ();
    fn handle(&mut self, e: Event, _: &mut Context<Self>) {
        let mut order = self.order.lock().unwrap();
        match e {
            Event::StepDone(s) => {
                order.push(format!("step {}", s.step));
                if s.step == 3 {
                    self.ctl.send(Command::Pause);
                }
            }
            Event::Paused { step, .. } => {
                order.push(format!("paused {step}"));
                // Nothing may happen until this command arrives.
                order.push("resume sent".into());
                self.ctl.send(Command::Resume);
            }
            Event::Resumed { step, .. } => order.push(format!("resumed {step}")),
            _ => {}
        }
    }
}

#[test]
fn pause_stops_the_steps_and_resume_continues_them() {
    let dir = tempfile::tempdir().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let o2 = order.clone();
    let s = Pipeline::new(plan(dir.path(), &["train.max_steps=12"])).subscribe(move |ctl| PauseProbe { order: o2, ctl }.start().recipient()).run().unwrap();
    assert_eq!(s.steps, 12);
    let order = order.lock().unwrap().clone();
    // The Trainer pauses after step 3, or after step 4 when it had started that update before
    // the command reached it, and takes no update until the resume arrives.
    let paused = order.iter().position(|e| e.starts_with("paused ")).unwrap_or_else(|| panic!("never paused: {order:?}"));
    let at_step: u64 = order[paused]["paused ".len()..].parse().unwrap();
    assert!((3..=4).contains(&at_step), "{order:?}");
    let sent = order.iter().position(|e| e == "resume sent").unwrap();
    let resumed = order.iter().position(|e| *e == format!("resumed {at_step}")).unwrap_or_else(|| panic!("never resumed: {order:?}"));
    assert!(paused < sent && sent < resumed, "{order:?}");
    let steps_between: Vec<&String> = order[paused..resumed].iter().filter(|e| e.starts_with("step ")).collect();
    assert!(steps_between.is_empty(), "steps while paused: {steps_between:?} in {order:?}");
    let after: Vec<&String> = order[resumed + 1..].iter().filter(|e| e.starts_with("step ")).collect();
    assert_eq!(after.len() as u64, 12 - at_step, "every remaining step after the resume: {order:?}");
}

/// Drops examples shorter than `min` tokens.
struct MinLength(usize);

impl DataStage for MinLength {
    fn name(&self) -> &str {
        "min-length"
    }
    fn process(&mut self, mut batch: RawBatch) -> RawBatch {
        batch.examples.retain(|e| e.payload.n_tokens() >= self.0);
        batch
    }
}

#[test]
fn a_custom_stage_filters_what_reaches_the_batches() {
    use pretune::actors::control::StopFlag;
    use pretune::actors::DataPlane;
    use pretune::actors::trainer::Reorder;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), &[]);
    let stop = StopFlag::new();
    let (rx, handles) = DataPlane::new(&p, stop.clone(), Arc::new(|e| panic!("{e:?}"))).workers(2).stages(vec![Box::new(MinLength(40))]).spawn().unwrap();
    let mut reorder = Reorder::new(0);
    let batches: Vec<_> = (0..20).map(|_| reorder.next(&rx, &stop).unwrap()).collect();
    stop.abort();
    drop(rx);
    for h in handles {
        h.join().unwrap();
    }
    assert!(batches.iter().flat_map(|b| b.lengths.iter()).all(|&l| l >= 42), "every row has >= 40 text tokens");
    assert!(batches.iter().any(|b| b.batch_size < 16), "some examples were dropped");
    assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
}

#[test]
fn the_control_endpoint_needs_a_token_off_loopback_and_obeys_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let c = cfg.to_str().unwrap();
    let port = free_port();
    let (code, _, err) = run_cli(&["train", c, "--set", &format!("control.listen=0.0.0.0:{port}")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("control.token"), "{err}");

    let out = dir.path().join("ctl");
    let mut child = crate::util::KillOnDrop(std::process::Command::new(bin())
        .args(["train", c, "--set", &format!("control.listen=0.0.0.0:{port}"), "--set", "control.token=s3cret"])
        .args(["--set", "train.max_steps=100000", "--set", "train.log_every=1", "--set", "data.eval=[]", "--set", &format!("run.out_dir={}", out.display())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap());
    eventually(Duration::from_secs(60), "the run started", || std::fs::read_to_string(out.join("events.jsonl")).is_ok_and(|t| t.lines().count() >= 2).then_some(()));
    let addr = format!("127.0.0.1:{port}");
    let (code, _, err) = run_cli(&["ctl", &addr, "stop"]);
    assert_eq!(code, 1, "refused without the token: {err}");
    assert!(err.contains("401"), "{err}");
    let (code, stdout, err) = run_cli(&["ctl", &addr, "lr", "0.0005", "--token", "s3cret"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("set_learning_rate"), "{stdout}");
    let (code, _, err) = run_cli(&["ctl", &addr, "stop", "--token", "s3cret"]);
    assert_eq!(code, 0, "{err}");
    let status = crate::util::wait_bounded(&mut child.0, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0));
    let latest = CheckpointStore::new(out.join("checkpoints")).latest().expect("a checkpoint on stop");
    CheckpointStore::verify(&latest).unwrap();
    let commands: Vec<Command> = crate::util::records(&out).into_iter().filter_map(|r| match r {
        pretune::actors::events::Record::Command(c) => Some(c),
        _ => None,
    }).collect();
    assert_eq!(commands, vec![Command::SetLearningRate { lr: 0.0005 }, Command::Stop], "commands are logged");
}

/// Every example runs on the tiny configs and prints what its README says.
#[test]
fn the_examples_run() {
    let root = crate::util::root();
    for (example, expect) in [
        ("custom_logger", "\"event\":\"phase_done\""),
        ("early_stop_on_plateau", "stopped: true"),
        ("custom_stage", "the stage dropped"),
        ("pretrain_then_finetune", "fine-tuning:"),
        ("custom_objective", "shuffle_accuracy"),
        ("multilabel_head", "accuracy.long"),
    ] {
        let exe = crate::util::example(example);
        assert!(exe.exists(), "{} is built by `cargo test`", exe.display());
        let (status, stdout, stderr) = crate::util::Drained::spawn(std::process::Command::new(&exe).current_dir(&root)).output(Duration::from_secs(600));
        assert!(status.success(), "{example}: {stderr}");
        assert!(stdout.contains(expect), "{example} printed:\n{stdout}");
    }
}
