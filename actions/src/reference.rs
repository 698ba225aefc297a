//! The action reference in `docs/actions.md`, generated from the registry: each module's
//! delivery, units and providers, and its input and output fields from their derived JSON
//! Schemas (types, whether required, the fields' doc comments). A test keeps the document
//! current: `UPDATE_DOCS=1 cargo test -p switchboard-actions reference` rewrites it.

use switchboard_runtime::action::schema::{InputField, InputSchema, JsonType};
use switchboard_runtime::action::{ActionRegistry, Delivery};

/// The line before the generated part of `docs/actions.md`.
pub const BEGIN: &str = "<!-- BEGIN generated action reference (actions/src/reference.rs) -->";
/// The line after it.
pub const END: &str = "<!-- END generated action reference -->";

/// The reference of every registered module, as Markdown.
pub fn markdown(registry: &ActionRegistry) -> String {
    let mut out = String::new();
    for kind in registry.kinds() {
        let action = registry.get(kind).expect("a listed kind is registered");
        let delivery = match action.delivery() {
            Delivery::Internal => "internal",
            Delivery::Idempotent => "idempotent",
            Delivery::AtMostOnce => "at most once",
        };
        let list = |items: Vec<String>| if items.is_empty() { "—".to_owned() } else { items.join(", ") };
        let units = list(action.units().iter().map(|u| format!("`{u}`")).collect());
        let providers = list(action.providers().iter().map(|p| format!("`{p}`")).collect());
        out.push_str(&format!("### `{kind}`\n\nDelivery: {delivery}. Units: {units}. Connection providers: {providers}.\n\n"));
        out.push_str("| input | type | required | |\n|---|---|---|---|\n");
        rows(&mut out, &action.input_schema().fields, true);
        out.push_str("\n| output | type | |\n|---|---|---|\n");
        rows(&mut out, &InputSchema::from_json(action.output_schema()).fields, false);
        out.push('\n');
    }
    out
}

fn rows(out: &mut String, fields: &[InputField], with_required: bool) {
    if fields.is_empty() {
        out.push_str(if with_required { "| (any) | any | | |\n" } else { "| (any) | any | |\n" });
    }
    for f in fields {
        let types: Vec<&str> = f.types.iter().filter(|t| **t != JsonType::Null).map(|t| t.name()).collect();
        let ty = if types.is_empty() { "any".to_owned() } else { types.join(" or ") };
        let description = f.description.as_deref().unwrap_or("").replace('\n', " ");
        if with_required {
            let required = if f.required { "yes" } else { "" };
            out.push_str(&format!("| `{}` | {ty} | {required} | {description} |\n", f.name));
        } else {
            out.push_str(&format!("| `{}` | {ty} | {description} |\n", f.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchboard_integrations::connections::Vault;

    use super::*;
    use crate::{ActionsConfig, registry};

    #[test]
    fn reference_in_the_docs_is_current() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let vault = Arc::new(Vault::from_hex(&Vault::generate_hex()).unwrap());
        let generated = markdown(&registry(&ActionsConfig::new(vault)).unwrap());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/actions.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (start, end) = (doc.find(BEGIN).expect("the BEGIN marker"), doc.find(END).expect("the END marker"));
        let current = &doc[start + BEGIN.len()..end];
        let wanted = format!("\n\n{generated}");
        if current != wanted {
            if std::env::var_os("UPDATE_DOCS").is_some() {
                std::fs::write(path, format!("{}{wanted}{}", &doc[..start + BEGIN.len()], &doc[end..])).unwrap();
            } else {
                panic!("docs/actions.md's action reference is stale: run `UPDATE_DOCS=1 cargo test -p switchboard-actions reference`");
            }
        }
    }
}
