//! Contact rules: an account's quiet hours (`/v1/contact-rules`) and its opted-out numbers
//! (`/v1/opt-outs`). The engine applies both to every `sms.send` and `voice.call`
//! (`runtime/src/contact.rs`, `docs/contact-rules.md`); Twilio's inbound message webhook
//! (`routes/callbacks.rs`) records opt-outs from STOP replies.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_actions::sms_send::is_e164;
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::contact::{Channel, ContactRules};
use switchboard_runtime::definition::Problem;
use switchboard_runtime::store::OptOutRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{JsonBody, Query};
use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// `/v1/contact-rules` and `/v1/opt-outs…`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(read_rules, replace_rules)).routes(routes!(list_opt_outs, add_opt_out)).routes(routes!(remove_opt_out))
}

/// `/v1/contact-rules` and `/v1/opt-outs…`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// Quiet hours: a window of the recipient's local time, and whole days off.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuietHoursDoc {
    /// Starts, local `HH:MM` (included).
    #[schema(example = "21:00")]
    pub start: String,
    /// Ends, local `HH:MM` (excluded); before `start`, the window crosses midnight.
    #[schema(example = "08:00")]
    pub end: String,
    /// Weekdays (`mon` … `sun`) quiet all day.
    #[serde(default)]
    pub days_off: Vec<String>,
}

/// An account's contact rules.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContactRulesDoc {
    /// The quiet hours; `null` switches them off.
    #[schema(required = true)]
    pub quiet_hours: Option<QuietHoursDoc>,
    /// The action kinds they hold (default `sms.send` and `voice.call`).
    pub applies_to: Vec<String>,
}

/// An opted-out number.
#[derive(Debug, Serialize, ToSchema)]
pub struct OptOut {
    /// The number, E.164.
    pub number: String,
    /// `sms`, `voice` or `all`.
    pub channel: String,
    /// Who recorded it: `inbound_sms` (a STOP reply), `twilio_21610` (Twilio refused a send),
    /// `api` or what the CRM said.
    pub source: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&OptOutRow> for OptOut {
    fn from(o: &OptOutRow) -> Self {
        OptOut { number: o.number.clone(), channel: o.channel.clone(), source: o.source.clone(), created_at: to_rfc3339(o.created_at) }
    }
}

/// A page of opt-outs.
#[derive(Debug, Serialize, ToSchema)]
pub struct OptOutList {
    /// By number, then channel.
    pub opt_outs: Vec<OptOut>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A number to opt out (`POST /v1/opt-outs`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewOptOut {
    /// The number, E.164.
    number: String,
    /// `sms`, `voice` or `all` (default).
    #[serde(default)]
    channel: Option<String>,
    /// Who asked, for the record (default `api`; at most 64 characters).
    #[serde(default)]
    source: Option<String>,
}

/// The filter and page of `GET /v1/opt-outs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct OptOutQuery {
    /// Only this number's.
    number: Option<String>,
    /// Where the previous page ended.
    cursor: Option<String>,
    /// Items a page (default 50, at most 200).
    limit: Option<i64>,
}

/// Which opt-outs of a number to clear (`DELETE /v1/opt-outs/{number}`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ChannelQuery {
    /// `sms`, `voice` or `all`; every channel when left out.
    channel: Option<String>,
}

/// What `DELETE /v1/opt-outs/{number}` cleared.
#[derive(Debug, Serialize, ToSchema)]
pub struct OptOutsRemoved {
    /// The number.
    pub number: String,
    /// How many opt-outs were removed (0 when it had none).
    pub removed: u64,
}

fn rules_doc(rules: &ContactRules) -> ContactRulesDoc {
    serde_json::from_value(rules.to_json()).expect("the rules' JSON has the documented shape")
}

fn channel(text: Option<&str>, path: &str) -> Result<Channel, Problem> {
    match text {
        None => Ok(Channel::All),
        Some(c) => Channel::parse(c).ok_or_else(|| Problem { path: path.into(), message: format!("'{c}' is not a channel: sms, voice or all") }),
    }
}

/// The account's contact rules
///
/// The defaults (21:00–08:00 for `sms.send` and `voice.call`) until they are replaced.
#[utoipa::path(
    get,
    path = "/v1/contact-rules",
    tag = "contact",
    operation_id = "read_contact_rules",
    security(("account_key" = [])),
    responses(
        (status = 200, description = "The rules in force", body = ContactRulesDoc),
        doc::Unauthorized,
    ),
)]
async fn read_rules(State(state): State<AppState>, AccountAuth(account): AccountAuth) -> ApiResult<Json<ContactRulesDoc>> {
    let stored = state.engine.store().account(&account.id).await?.ok_or_else(|| ApiError::not_found("account"))?;
    Ok(Json(rules_doc(&ContactRules::from_stored(stored.contact_rules.as_deref()))))
}

/// Replaces the account's contact rules
///
/// A field left out takes its default; `quiet_hours: null` switches quiet hours off. Steps
/// already deferred keep their time; the next step due reads the new rules (other processes
/// within 5 seconds).
#[utoipa::path(
    put,
    path = "/v1/contact-rules",
    tag = "contact",
    operation_id = "replace_contact_rules",
    security(("account_key" = [])),
    request_body = ContactRulesDoc,
    responses(
        (status = 200, description = "The rules in force from now on", body = ContactRulesDoc),
        (status = 422, description = "`invalid_contact_rules`, naming every problem with its path (e.g. `quiet_hours.start`)", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn replace_rules(State(state): State<AppState>, AccountAuth(account): AccountAuth, JsonBody(body): JsonBody<Value>) -> ApiResult<Json<ContactRulesDoc>> {
    let mut problems = Vec::new();
    let rules = match ContactRules::parse(&body) {
        Ok(rules) => Some(rules),
        Err(found) => {
            problems.extend(found.into_iter().map(|(path, message)| Problem { path, message }));
            None
        }
    };
    if let Some(rules) = &rules {
        let known: Vec<&str> = state.engine.actions().kinds().collect();
        for (i, kind) in rules.applies_to.iter().enumerate() {
            if !known.contains(&kind.as_str()) {
                problems.push(Problem { path: format!("applies_to[{i}]"), message: format!("unknown action kind '{kind}' (known: {})", known.join(", ")) });
            }
        }
    }
    let Some(rules) = rules.filter(|_| problems.is_empty()) else {
        return Err(ApiError::invalid("invalid_contact_rules", "the contact rules are invalid", problems));
    };
    if !state.engine.store().set_contact_rules(&account.id, Some(&rules.to_json().to_string())).await? {
        return Err(ApiError::not_found("account"));
    }
    state.engine.forget_account(&account.id);
    Ok(Json(rules_doc(&rules)))
}

/// The account's opted-out numbers
#[utoipa::path(
    get,
    path = "/v1/opt-outs",
    tag = "contact",
    operation_id = "list_opt_outs",
    security(("account_key" = [])),
    params(OptOutQuery),
    responses(
        (status = 200, description = "A page of opt-outs", body = OptOutList),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn list_opt_outs(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<OptOutQuery>) -> ApiResult<Json<OptOutList>> {
    let limit = super::page_limit(q.limit);
    let number = q.number.as_deref().map(str::trim);
    let page = state.engine.store().list_opt_outs(&account.id, number, q.cursor.as_deref(), limit).await?;
    Ok(Json(OptOutList { opt_outs: page.items.iter().map(OptOut::from).collect(), next_cursor: page.next_cursor }))
}

/// Opts a number out
///
/// From now on, `sms.send` (channel `sms` or `all`) and `voice.call` (`voice` or `all`) to it
/// end `skipped` without sending: a send whose dispatch had not committed yet is stopped too.
/// Recording an opt-out the number has already keeps the first one (200).
#[utoipa::path(
    post,
    path = "/v1/opt-outs",
    tag = "contact",
    operation_id = "add_opt_out",
    security(("account_key" = [])),
    request_body = NewOptOut,
    responses(
        (status = 201, description = "The opt-out, recorded", body = OptOut),
        (status = 200, description = "The number had this opt-out already: the first one, kept", body = OptOut),
        (status = 422, description = "`invalid_opt_out`, naming every problem", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn add_opt_out(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    JsonBody(new): JsonBody<NewOptOut>,
) -> ApiResult<(StatusCode, Json<OptOut>)> {
    let mut problems = Vec::new();
    let number = new.number.trim();
    if !is_e164(number) {
        problems.push(Problem { path: "number".into(), message: "must be a phone number in E.164 form, e.g. +15550001111".into() });
    }
    let channel = channel(new.channel.as_deref(), "channel").map_err(|p| problems.push(p)).ok();
    let source = new.source.as_deref().map(str::trim).unwrap_or("api");
    if source.is_empty() || source.chars().count() > 64 {
        problems.push(Problem { path: "source".into(), message: "1 to 64 characters".into() });
    }
    let Some(channel) = channel.filter(|_| problems.is_empty()) else {
        return Err(ApiError::invalid("invalid_opt_out", "the opt-out is invalid", problems));
    };
    let now = state.engine.clock().now();
    let (row, created) = state.engine.store().add_opt_out(&account.id, number, channel, source, now).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(OptOut::from(&row))))
}

/// Clears a number's opt-outs
///
/// Sends to it go out again (on the channels cleared). `channel` clears one; without it, all.
#[utoipa::path(
    delete,
    path = "/v1/opt-outs/{number}",
    tag = "contact",
    operation_id = "remove_opt_out",
    security(("account_key" = [])),
    params(("number" = String, Path, description = "The number, E.164 (`+` written `%2B`)"), ChannelQuery),
    responses(
        (status = 200, description = "What was cleared", body = OptOutsRemoved),
        (status = 422, description = "`invalid_opt_out`: not an E.164 number, or not a channel", body = doc::ErrorBody),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn remove_opt_out(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Path(number): Path<String>,
    Query(q): Query<ChannelQuery>,
) -> ApiResult<Json<OptOutsRemoved>> {
    let number = number.trim().to_owned();
    let mut problems = Vec::new();
    if !is_e164(&number) {
        problems.push(Problem { path: "number".into(), message: "must be a phone number in E.164 form, e.g. %2B15550001111 in a URL".into() });
    }
    let channels = match q.channel.as_deref() {
        None => Vec::new(),
        Some(c) => channel(Some(c), "channel").map(|c| vec![c]).map_err(|p| problems.push(p)).unwrap_or_default(),
    };
    if !problems.is_empty() {
        return Err(ApiError::invalid("invalid_opt_out", "nothing to clear", problems));
    }
    let removed = state.engine.store().remove_opt_outs(&account.id, &number, &channels).await?;
    Ok(Json(OptOutsRemoved { number, removed }))
}
