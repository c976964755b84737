//! The fine-tuning workload: a task's labelled examples in seeded epochs, its whole held-out
//! set, its collator and objective.

use std::sync::Arc;

use super::{Phase, RunContext, Workload};
use crate::data::labelled::{LabelledStream, Ordering};
use crate::data::source::BadRecord;
use crate::data::stream::{Cursor, ExampleSource, OpenSource};
use crate::workload::task_plan::TaskPlan;
use crate::finetune::task::{TaskCollator, TaskObjective};
use crate::objective::{Collator, ModelSpec, Objective};

impl Workload for TaskPlan {
    fn phase(&self) -> Phase {
        Phase::Finetune
    }

    /// Seeded epochs of the labelled set; the ranks of a data-parallel run share each global
    /// batch.
    fn train_source(&self, cx: &RunContext, cursor: Cursor) -> Box<dyn ExampleSource> {
        let t = &cx.config.train;
        let ordering = Ordering { seed: cx.config.run.seed, shuffle: true, repeat: true, batch: t.batch_size.saturating_mul(cx.world), group_by_length: t.group_by_length };
        Box::new(LabelledStream::new(self.train.clone(), ordering, cursor))
    }

    /// The whole held-out set, in file order.
    fn eval_source(&self, cx: &RunContext) -> Option<OpenSource> {
        if self.eval.is_empty() {
            return None;
        }
        let (examples, ordering) = (self.eval.clone(), Ordering { seed: cx.config.run.seed, shuffle: false, repeat: false, batch: cx.config.train.batch_size, group_by_length: false });
        Some(Box::new(move || Box::new(LabelledStream::new(examples.clone(), ordering, Cursor::default())) as Box<dyn ExampleSource>))
    }

    fn max_eval_batches(&self, _cx: &RunContext) -> usize {
        usize::MAX
    }

    fn probes(&self) -> &[super::probe::Probe] {
        &self.probes
    }

    fn retention(&self) -> Option<Arc<super::retention::Retention>> {
        self.retention.clone()
    }

    fn collator(&self, _cx: &RunContext) -> Arc<dyn Collator> {
        Arc::new(TaskCollator(self.task.clone()))
    }

    fn objective(&self, _model: &ModelSpec) -> Arc<dyn Objective> {
        Arc::new(TaskObjective { task: self.task.clone(), spec: self.spec.clone(), monitor: self.monitor.clone() })
    }

    fn describe_data(&self) -> String {
        let mut data = format!("{} training / {} held-out examples", self.train.len(), self.eval.len());
        if (self.train_records, self.eval_records) != (self.train.len(), self.eval.len()) {
            // Question answering: a question becomes one window or several.
            data.push_str(&format!(" (windows of {} / {} records)", self.train_records, self.eval_records));
        }
        if !self.task.labels().is_empty() {
            data.push_str(&format!(", {} labels", self.task.labels().len()));
        }
        data
    }

    fn notes(&self) -> &[String] {
        &self.notes
    }

    fn epoch_steps(&self) -> u64 {
        self.epoch_steps
    }

    fn rebatched(&mut self, config: &crate::config::RunConfig, world: usize) -> Option<u64> {
        let (max_steps, epoch_steps) = crate::workload::task_plan::steps(config, self.train.len(), world);
        (self.max_steps, self.epoch_steps) = (max_steps, epoch_steps);
        (config.train.epochs > 0).then_some(max_steps)
    }

    fn skipped(&self) -> &[BadRecord] {
        &self.skipped
    }

    fn task(&self) -> Option<&TaskPlan> {
        Some(self)
    }
}
