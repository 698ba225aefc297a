//! `log`: writes a message to the service's log and to the step's output. Useful for tracing a
//! workflow's path and for trying templates; it has no side effect, so it is idempotent.

use async_trait::async_trait;
use serde_json::{Value, json};
use switchboard_runtime::action::{Action, ActionContext, ActionError, ActionOutput, Delivery, Field, FieldType};

/// The `log` action module.
#[derive(Debug, Clone, Copy, Default)]
pub struct Log;

#[async_trait]
impl Action for Log {
    const KIND: &'static str = "log";
    const INPUT: &'static [Field] = &[Field { name: "message", ty: FieldType::String, required: true }];
    const DELIVERY: Delivery = Delivery::Internal;

    async fn execute(&self, ctx: &ActionContext, input: Value) -> Result<ActionOutput, ActionError> {
        let message = match input.get("message") {
            Some(Value::String(s)) => s.clone(),
            // A rendered expression may have produced a number or an object: log its JSON.
            Some(other) if !other.is_null() => other.to_string(),
            _ => return Err(ActionError::permanent("invalid_input", "message: required")),
        };
        tracing::info!(
            account_id = %ctx.account_id,
            run_id = %ctx.run_id,
            step_id = %ctx.step_id,
            "{message}"
        );
        Ok(ActionOutput { output: json!({ "message": message }), usage: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchboard_runtime::action::FailureClass;

    use super::*;

    fn ctx() -> ActionContext {
        ActionContext {
            account_id: "acc".into(),
            run_id: "run".into(),
            step_id: "note".into(),
            attempt: 1,
            idempotency_key: "run:1".into(),
            timeout: Duration::from_secs(1),
            connection: None,
        }
    }

    #[tokio::test]
    async fn outputs_the_message_without_usage() {
        let out = Log.execute(&ctx(), json!({"message": "lead 42 qualified"})).await.unwrap();
        assert_eq!(out.output, json!({"message": "lead 42 qualified"}));
        assert!(out.usage.is_empty());
    }

    #[tokio::test]
    async fn missing_message_is_permanent() {
        let err = Log.execute(&ctx(), json!({})).await.unwrap_err();
        assert_eq!(err.class, FailureClass::Permanent);
        assert_eq!(err.code, "invalid_input");
    }
}
