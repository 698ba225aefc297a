//! `log`: writes a message to the service's log and to the step's output. Useful for tracing a
//! workflow's path and for trying templates; it has no side effect, so it is idempotent.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_runtime::action::{Action, ActionContext, ActionError, Delivery, Done};

/// The `log` action module.
#[derive(Debug, Clone, Copy, Default)]
pub struct Log;

/// The input of `log`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogInput {
    /// The message. A rendered expression may produce a number or an object: its JSON is logged.
    #[schemars(with = "String")]
    pub message: Value,
}

/// The output of `log`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LogOutput {
    /// The message as logged.
    pub message: String,
}

#[async_trait]
impl Action for Log {
    const KIND: &'static str = "log";
    const DELIVERY: Delivery = Delivery::Internal;
    type Input = LogInput;
    type Output = LogOutput;

    async fn execute(&self, ctx: &ActionContext, input: LogInput) -> Result<Done<LogOutput>, ActionError> {
        let message = match input.message {
            Value::String(s) => s,
            Value::Null => return Err(ActionError::permanent("invalid_input", "message: required")),
            other => other.to_string(),
        };
        tracing::info!(
            account_id = %ctx.account_id,
            run_id = %ctx.run_id,
            step_id = %ctx.step_id,
            "{message}"
        );
        Ok(Done { output: LogOutput { message }, usage: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use switchboard_runtime::action::{DynAction, FailureClass};

    use super::*;

    fn ctx() -> ActionContext {
        ActionContext {
            account_id: "acc".into(),
            run_id: "run".into(),
            step_id: "note".into(),
            step_seq: 1,
            now: 0,
            attempt: 1,
            idempotency_key: "run:1".into(),
            timeout: Duration::from_secs(1),
            connection: None,
            scope: None,
        }
    }

    #[tokio::test]
    async fn outputs_the_message_without_usage() {
        let out = DynAction::execute(&Log, &ctx(), json!({"message": "lead 42 qualified"})).await.unwrap();
        assert_eq!(out.output, json!({"message": "lead 42 qualified"}));
        assert!(out.usage.is_empty());
    }

    #[tokio::test]
    async fn missing_message_is_permanent() {
        let err = DynAction::execute(&Log, &ctx(), json!({})).await.unwrap_err();
        assert_eq!(err.class, FailureClass::Permanent);
        assert_eq!(err.code, "invalid_input");
    }
}
