//! Job changes as pure code on a [`Tx`]: permission check on `(app, JOB)`, validation (a dependency cycle is
//! refused with its path), the record, and an audit entry — in the same transaction as the change.
//!
//! Levels: `masked_read`/`read` see jobs, runs and logs; `edit` triggers, stops, pauses and resumes;
//! `publish` creates, changes and deletes definitions. Administrators can do everything.

use std::collections::BTreeMap;

use serde_json::json;

use super::model::{JobRec, JobSpec, find_cycle};
use crate::error::{ControlError, Result};
use crate::model::{Level, check_name};
use crate::ops::Tx;
use crate::state::{Change, Rec};

fn unknown_job(env: &str, name: &str) -> ControlError {
    ControlError::not_found(format!("unknown job {name:?} in {env}")).with_field("job")
}

/// Checks that `user` has `level` on a job of application `app` (reads: no audit of a refusal).
pub fn check_level(
    st: &crate::state::State,
    user: &crate::model::User,
    app: &str,
    name: &str,
    level: Level,
) -> Result<()> {
    let have = st.level(user, app, name);
    if have < level {
        return Err(ControlError::forbidden(format!(
            "user {:?} has {have:?} on job {name:?} ({app}/{name}), needs {level:?}",
            user.name
        )));
    }
    Ok(())
}

impl Tx<'_> {
    /// Requires `level` on an existing job, remembering it as the target of a denial.
    pub fn need_job(&mut self, env: &str, name: &str, level: Level) -> Result<JobRec> {
        self.target = format!("jobs/{env}/{name}");
        let job = self
            .st
            .jobs
            .get(env, name)
            .cloned()
            .ok_or_else(|| unknown_job(env, name))?;
        check_level(self.st, self.actor, &job.spec.app, name, level)?;
        Ok(job)
    }

    /// Creates or replaces a job definition (`publish` on `(app, JOB)`; for a replacement also on the old
    /// application). Upstream jobs must exist in the same environment and must not form a cycle.
    pub fn put_job(&mut self, env: &str, name: &str, spec: JobSpec) -> Result<JobRec> {
        self.target = format!("jobs/{env}/{name}");
        if !self.st.envs.iter().any(|e| e == env) {
            return Err(
                ControlError::not_found(format!("unknown environment {env:?}")).with_field("env"),
            );
        }
        check_name("job", name)?;
        spec.validate()?;
        if !self.st.apps.contains_key(&spec.app) {
            return Err(
                ControlError::not_found(format!("unknown application {:?}", spec.app))
                    .with_field("app"),
            );
        }
        check_level(self.st, self.actor, &spec.app, name, Level::Publish)?;
        let old = self.st.jobs.get(env, name).cloned();
        if let Some(o) = &old {
            check_level(self.st, self.actor, &o.spec.app, name, Level::Publish)?;
        }
        let mut graph: BTreeMap<String, Vec<String>> = self
            .st
            .jobs
            .jobs
            .values()
            .filter(|j| j.env == env)
            .map(|j| (j.name.clone(), j.spec.after.clone()))
            .collect();
        for (i, u) in spec.after.iter().enumerate() {
            if u != name && !graph.contains_key(u) {
                return Err(ControlError::not_found(format!(
                    "upstream job {u:?} does not exist in {env}"
                ))
                .with_field(format!("after/{i}")));
            }
        }
        graph.insert(name.to_string(), spec.after.clone());
        if let Some(path) = find_cycle(&graph, name) {
            return Err(ControlError::bad(
                "after",
                format!("dependency cycle: {}", path.join(" after ")),
            ));
        }
        let rec = JobRec {
            env: env.into(),
            name: name.into(),
            spec,
            paused: old.as_ref().is_some_and(|o| o.paused),
            rev: self.next_id(),
        };
        self.put(Rec::Jobs(rec.clone()));
        self.audit(
            "jobs.put",
            &format!("jobs/{env}/{name}"),
            json!({"old": old.map(|o| o.masked().spec), "new": rec.masked().spec}),
        );
        Ok(rec)
    }

    /// Deletes a job (`publish`); refused while other jobs list it upstream.
    pub fn delete_job(&mut self, env: &str, name: &str) -> Result<()> {
        let job = self.need_job(env, name, Level::Publish)?;
        let down: Vec<String> = self
            .st
            .jobs
            .downstream(env, name)
            .map(|j| j.name.clone())
            .collect();
        if !down.is_empty() {
            return Err(ControlError::bad(
                "job",
                format!("jobs {down:?} run after {name:?}: change them first"),
            ));
        }
        self.changes.push(Change::Delete {
            kind: "jobs",
            key: job.key(),
        });
        self.audit(
            "jobs.delete",
            &format!("jobs/{env}/{name}"),
            json!({"old": job.masked().spec}),
        );
        Ok(())
    }

    /// Pauses or resumes a job (`edit`).
    pub fn pause_job(&mut self, env: &str, name: &str, paused: bool) -> Result<JobRec> {
        let mut job = self.need_job(env, name, Level::Edit)?;
        if job.paused != paused {
            job.paused = paused;
            job.rev = self.next_id();
            self.put(Rec::Jobs(job.clone()));
        }
        self.audit(
            if paused { "jobs.pause" } else { "jobs.resume" },
            &format!("jobs/{env}/{name}"),
            json!({}),
        );
        Ok(job)
    }

    /// Records a manual action on a job (trigger, stop) after checking `edit`: the audit entry commits
    /// before the action is carried out, so no action goes unrecorded.
    pub fn job_action(
        &mut self,
        env: &str,
        name: &str,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<JobRec> {
        let job = self.need_job(env, name, Level::Edit)?;
        if action == "jobs.trigger" && job.paused {
            return Err(ControlError::bad("job", format!("job {name:?} is paused")));
        }
        self.audit(action, &format!("jobs/{env}/{name}"), detail);
        Ok(job)
    }
}
