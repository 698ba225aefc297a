//! Which connection a step sends through (SPEC §6): the one its `connection:` names, else the
//! account's only connection of the module's providers. Checked when a workflow is saved, and
//! again when the step runs (connections can be deleted in between).

use std::sync::Arc;

use serde_json::Value;

use super::Engine;
use crate::action::{ActionError, ConnectionRef};
use crate::definition::{Problem, StepKind, Workflow};
use crate::store::ConnectionRow;
use crate::Result;

impl Engine {
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
            match connection {
                Some(name) => {
                    if self.store.connections_for(account_id, providers, Some(name)).await?.is_empty() {
                        problems.push(Problem {
                            path,
                            message: format!("no {} connection named '{name}' in this account", providers.join(" or ")),
                        });
                    }
                }
                None => {
                    let found = self.store.connections_for(account_id, providers, None).await?;
                    if found.len() > 1 {
                        let names: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
                        problems.push(Problem {
                            path,
                            message: format!(
                                "this account has {} {} connections ({}); name one with `connection:`",
                                found.len(),
                                providers.join(" or "),
                                names.join(", ")
                            ),
                        });
                    }
                }
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
            let found = self.store.connections_for(account_id, action.providers(), None).await?;
            if let [only] = found.as_slice() {
                map.insert("connection".into(), Value::String(only.name.clone()));
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
        let mut found = self.store.connections_for(account_id, providers, name).await?;
        let wanted = providers.join(" or ");
        Ok(match (found.len(), name) {
            (1, _) => Ok(Arc::new(connection_ref(found.remove(0)))),
            (0, Some(name)) => Err(ActionError::permanent("missing_connection", format!("no {wanted} connection named '{name}'"))),
            (0, None) => Err(ActionError::permanent(
                "missing_connection",
                format!("this step needs a {wanted} connection and the account has none; add one, then retry the run"),
            )),
            (n, _) => Err(ActionError::permanent(
                "ambiguous_connection",
                format!("the account has {n} {wanted} connections; name one with `connection:` in the step"),
            )),
        })
    }
}

fn connection_ref(row: ConnectionRow) -> ConnectionRef {
    ConnectionRef {
        // A row whose hex does not decode gives empty bytes, which the vault refuses to open
        // with a clear error when the module opens them.
        sealed: hex::decode(&row.sealed).unwrap_or_default(),
        id: row.id,
        name: row.name,
        provider: row.provider,
        sandbox: row.sandbox == 1,
    }
}
