//! The one list of metric names, with help text and unit.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Tokens processed, by `phase` and `stage` (`loader`, `masker`, `trainer`).
pub const TOKENS: &str = "pretune_tokens_total";
/// Sequences processed, by `phase` and `stage`.
pub const SAMPLES: &str = "pretune_samples_total";
/// Optimizer updates, by `phase`.
pub const STEPS: &str = "pretune_steps_total";
/// Wall time of one optimizer update, data wait excluded, by `phase`.
pub const STEP_DURATION: &str = "pretune_step_duration_seconds";
/// Time the Trainer waited for its next batch, by `phase`.
pub const DATA_WAIT: &str = "pretune_data_wait_seconds_total";
/// Items waiting in a data-plane channel, by `queue`.
pub const QUEUE_DEPTH: &str = "pretune_queue_depth";
/// The bound of a data-plane channel, by `queue` (depth = capacity: the consumer is the
/// bottleneck; depth 0: the producer is).
pub const QUEUE_CAPACITY: &str = "pretune_queue_capacity";
/// Histogram: seconds of an update per `stage` (`h2d`, `forward`, `backward`, `optimizer`,
/// `comm_exposed`, `data_wait`), by `phase`.
pub const STEP_STAGE: &str = "pretune_step_stage_seconds";
/// Model FLOPs utilisation over the latest logging interval, by `phase`.
pub const MFU: &str = "pretune_mfu_ratio";
/// Latest training loss, by `phase` and `objective`.
pub const LOSS: &str = "pretune_loss";
/// Learning rate of the latest update, by `phase`.
pub const LEARNING_RATE: &str = "pretune_learning_rate";
/// Gradient norm before clipping, by `phase`.
pub const GRAD_NORM: &str = "pretune_grad_norm";
/// Latest held-out metric, by `phase` and `metric`.
pub const EVAL_METRIC: &str = "pretune_eval_metric";
/// Latest zero-shot probe accuracy of a pre-training run, by `probe` (`[[probe]]`).
pub const PROBE_ACCURACY: &str = "pretune_probe_accuracy";
/// Seconds the latest probe took on the Evaluator's thread, by `probe`.
pub const PROBE_SECONDS: &str = "pretune_probe_seconds";
/// Time to write one checkpoint.
pub const CHECKPOINT_DURATION: &str = "pretune_checkpoint_duration_seconds";
/// Records skipped by the Loader, by `reason`.
pub const RECORDS_SKIPPED: &str = "pretune_records_skipped_total";
/// Updates dropped because the loss or gradient norm was not finite, by `phase`.
pub const NONFINITE_STEPS: &str = "pretune_nonfinite_steps_total";
/// Time the Trainer stalled to hand a checkpoint over (copying weights and moments).
pub const CHECKPOINT_STALL: &str = "pretune_checkpoint_stall_seconds";
/// Histogram: seconds per update spent in gradient and count all-reduces (data-parallel runs).
pub const ALLREDUCE: &str = "pretune_allreduce_seconds";
/// Device memory in use on a CUDA device, by `device`.
pub const DEVICE_MEMORY: &str = "pretune_device_memory_used_bytes";
/// Events a subscriber missed because its mailbox was full.
pub const EVENTS_DROPPED: &str = "pretune_events_dropped_total";
/// Unix time of the latest optimizer update, by `phase` (set at the start too): "time since
/// the last step" for the stalled-run alert and the dashboard's status row.
pub const LAST_STEP_TIME: &str = "pretune_last_step_timestamp_seconds";
/// The latest update's number, by `phase` (counting from the run's start across resumes,
/// unlike [`STEPS`], which counts this process's updates).
pub const STEP: &str = "pretune_step";
/// The run's planned updates, by `phase` (with the step rate: the ETA).
pub const MAX_STEPS: &str = "pretune_max_steps";
/// Processes in the run (1 without data parallelism): a rank missing from the scrape shows as
/// fewer series than this.
pub const WORLD_SIZE: &str = "pretune_world_size";
/// Checkpoint writes that failed.
pub const CHECKPOINT_FAILURES: &str = "pretune_checkpoint_failures_total";
/// Evaluations since the monitored metric last improved, by `phase` and `metric` (the count
/// early stopping uses, exported with or without patience).
pub const EVALS_SINCE_BEST: &str = "pretune_evals_since_best";
/// `events.jsonl` records that could not be written (a full disk): lost, never torn.
pub const EVENTS_WRITE_ERRORS: &str = "pretune_events_write_errors_total";
/// Times the launcher restarted the run's ranks from their last checkpoint
/// (`pretune launch --max-restarts`), as of this process's start.
pub const RESTARTS: &str = "pretune_restarts_total";
/// Bytes of token ids read from a prepared corpus, by `phase`: with data parallelism each
/// rank reads its own examples' only.
pub const PREPARED_BYTES_READ: &str = "pretune_prepared_token_bytes_read_total";
/// Constant 1 with version labels.
pub const BUILD_INFO: &str = "pretune_build_info";

/// Help text of [`DATA_WAIT`] (a float counter, see [`super::exporter`]).
pub const DATA_WAIT_HELP: &str = "Time the Trainer spent waiting for its next batch.";

/// The data-wait counter of `phase`.
pub fn data_wait(phase: &'static str) -> super::exporter::FloatCounter {
    super::exporter::float_counter(DATA_WAIT, DATA_WAIT_HELP, &[("phase", phase)])
}

/// Registers help text and units for every metric (`promtool check metrics` wants HELP).
pub fn describe_all() {
    describe_counter!(TOKENS, Unit::Count, "Tokens processed, by phase and pipeline stage.");
    describe_counter!(SAMPLES, Unit::Count, "Sequences processed, by phase and pipeline stage.");
    describe_counter!(STEPS, Unit::Count, "Optimizer updates.");
    describe_histogram!(STEP_DURATION, Unit::Seconds, "Wall time of one optimizer update, excluding the wait for data.");
    describe_gauge!(QUEUE_DEPTH, Unit::Count, "Items waiting in a pipeline channel or mailbox, by queue.");
    describe_gauge!(QUEUE_CAPACITY, Unit::Count, "The bound of a pipeline channel or mailbox, by queue.");
    describe_histogram!(STEP_STAGE, Unit::Seconds, "Seconds of one update per stage (h2d, forward, backward, optimizer, comm_exposed, data_wait); on CUDA one update per logging interval, synchronised at each stage boundary.");
    describe_gauge!(MFU, "Model FLOPs utilisation over the latest logging interval: dense-equivalent model FLOPs (3 x forward) per second over the peak.");
    describe_gauge!(LOSS, "Training loss of the latest logged update, by objective.");
    describe_gauge!(LEARNING_RATE, "Learning rate of the latest update.");
    describe_gauge!(GRAD_NORM, "Global gradient norm before clipping, at the latest logged update.");
    describe_gauge!(EVAL_METRIC, "Latest held-out evaluation metric.");
    describe_gauge!(PROBE_ACCURACY, "Latest zero-shot cloze probe accuracy of a pre-training run ([[probe]]), by probe.");
    describe_gauge!(PROBE_SECONDS, Unit::Seconds, "Seconds the latest probe took on the Evaluator's thread (off the training thread), by probe.");
    describe_histogram!(CHECKPOINT_DURATION, Unit::Seconds, "Time to write one checkpoint to disk.");
    describe_counter!(RECORDS_SKIPPED, Unit::Count, "Input records skipped as unreadable, by reason.");
    describe_gauge!(BUILD_INFO, "Build information; always 1.");
    describe_gauge!(DEVICE_MEMORY, Unit::Bytes, "Memory in use on a CUDA device (NVML), sampled on logging steps.");
    describe_counter!(EVENTS_DROPPED, Unit::Count, "Events a slow subscriber missed (its mailbox was full).");
    describe_counter!(NONFINITE_STEPS, Unit::Count, "Updates dropped because the loss or gradient norm was not finite.");
    describe_histogram!(CHECKPOINT_STALL, Unit::Seconds, "Time a training step stalled to hand a checkpoint over.");
    describe_histogram!(ALLREDUCE, Unit::Seconds, "Communication an update waited for (data-parallel runs): the counts and loss all-reduces, and the gradient all-reduce left after the backward pass's last gradient (the rest overlaps compute).");
    describe_gauge!(LAST_STEP_TIME, Unit::Seconds, "Unix time of the latest optimizer update (or of the Trainer's start).");
    describe_gauge!(MAX_STEPS, Unit::Count, "Optimizer updates the run plans.");
    describe_gauge!(STEP, Unit::Count, "The latest optimizer update's number (across resumes).");
    describe_gauge!(WORLD_SIZE, Unit::Count, "Processes in the run.");
    describe_counter!(CHECKPOINT_FAILURES, Unit::Count, "Checkpoint writes that failed.");
    describe_gauge!(EVALS_SINCE_BEST, Unit::Count, "Evaluations since the monitored metric last improved.");
    describe_counter!(RESTARTS, Unit::Count, "Times the launcher restarted every rank from the last checkpoint after a failure.");
    describe_counter!(PREPARED_BYTES_READ, Unit::Bytes, "Bytes of token ids read from a prepared corpus (each data-parallel rank reads its own examples' only).");
    describe_counter!(EVENTS_WRITE_ERRORS, Unit::Count, "events.jsonl records that could not be written (lost whole, never torn).");
}

/// Sets `pretune_build_info{version, tch_version, libtorch_version} 1`.
pub fn record_build_info() {
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "tch_version" => "0.26.0", "libtorch_version" => "2.13.0").set(1.0);
}
