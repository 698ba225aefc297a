//! Which connection a step sends through: the one its `connection:` names, else the
//! account's only connection of the module's providers. Checked when a workflow is saved, and
//! again when the step runs (connections can be deleted in between).

use std::sync::Arc;

use serde_json::Value;

use super::Engine;
use crate::Result;
use crate::action::{ActionError, ConnectionRef};
use crate::definition::{Problem, StepKind, Workflow};
use crate::store::ConnectionRow;

/// How choosing a connection among an account's candidates came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionChoice {
    /// The one named, or the only candidate.
    Chosen(ConnectionRow),
    /// None of that name, or no candidate at all.
    Missing,
    /// No name given and several candidates (their names).
    Ambiguous(Vec<String>),
}

impl Engine {
    /// Chooses among the account's connections of `providers`: the one `name`d, else the only
    /// one. The single rule behind saving (422s and pinning), enabling a template and running
    /// a step.
    pub async fn choose_connection(&self, account_id: &str, providers: &[&str], name: Option<&str>) -> Result<ConnectionChoice> {
        let mut found = self.store.connections_for(account_id, providers, name).await?;
        Ok(match found.len() {
            0 => ConnectionChoice::Missing,
            1 => ConnectionChoice::Chosen(found.remove(0)),
            _ => ConnectionChoice::Ambiguous(found.into_iter().map(|c| c.name).collect()),
        })
    }

    /// The problems of a workflow's connection choices in an account: a named connection that
    /// does not exist or is of another provider, or no name where the account has two or more
    /// candidates. A step without any candidate is allowed (the connection can be added before
    /// the step runs; until then the step fails `missing_connection`).
    pub async fn connection_problems(&self, account_id: &str, workflow: &Workflow) -> Result<Vec<Problem>> {
        let mut problems = Vec::new();
        for (i, step) in workflow.steps.iter().enumerate() {
            let StepKind::Action { kind, connection, .. } = &step.kind else { continue };
            let Some(action) = self.actions.get(kind) else { continue };
            let providers = action.providers();
            if providers.is_empty() {
                continue;
            }
            let path = format!("steps[{i}].connection");
            let wanted = providers.join(" or ");
            match (self.choose_connection(account_id, providers, connection.as_deref()).await?, connection) {
                (ConnectionChoice::Missing, Some(name)) => {
                    problems.push(Problem { path, message: format!("no {wanted} connection named '{name}' in this account") });
                }
                (ConnectionChoice::Ambiguous(names), _) => problems.push(Problem {
                    path,
                    message: format!("this account has {} {wanted} connections ({}); name one with `connection:`", names.len(), names.join(", ")),
                }),
                _ => {}
            }
        }
        Ok(problems)
    }

    /// Writes the chosen connection into each action step that names none while the account
    /// has exactly one candidate, so that adding a second connection later does not make a
    /// working workflow ambiguous. Steps with no candidate yet stay unpinned (they use the
    /// account's only connection once there is one).
    pub async fn pin_connections(&self, account_id: &str, doc: &mut Value) -> Result<()> {
        let Some(steps) = doc.get_mut("steps").and_then(Value::as_array_mut) else { return Ok(()) };
        for step in steps {
            let Some(map) = step.as_object_mut() else { continue };
            if map.contains_key("connection") {
                continue;
            }
            let Some(action) = map.get("action").and_then(Value::as_str).and_then(|k| self.actions.get(k)) else { continue };
            if action.providers().is_empty() {
                continue;
            }
            if let ConnectionChoice::Chosen(only) = self.choose_connection(account_id, action.providers(), None).await? {
                map.insert("connection".into(), Value::String(only.name));
            }
        }
        Ok(())
    }

    /// The connection a step of a module with `providers` sends through, or the permanent
    /// failure that ends the step.
    pub(super) async fn step_connection(
        &self,
        account_id: &str,
        providers: &[&str],
        name: Option<&str>,
    ) -> Result<std::result::Result<Arc<ConnectionRef>, ActionError>> {
        let wanted = providers.join(" or ");
        Ok(match (self.choose_connection(account_id, providers, name).await?, name) {
            (ConnectionChoice::Chosen(row), _) => Ok(Arc::new(row.into_ref())),
            (ConnectionChoice::Missing, Some(name)) => Err(ActionError::permanent("missing_connection", format!("no {wanted} connection named '{name}'"))),
            (ConnectionChoice::Missing, None) => Err(ActionError::permanent(
                "missing_connection",
                format!("this step needs a {wanted} connection and the account has none; add one, then retry the run"),
            )),
            (ConnectionChoice::Ambiguous(names), _) => Err(ActionError::permanent(
                "ambiguous_connection",
                format!("the account has {} {wanted} connections; name one with `connection:` in the step", names.len()),
            )),
        })
    }
}
