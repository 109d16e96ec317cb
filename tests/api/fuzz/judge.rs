//! What answers are allowed: no 5xx but 503, the contract's error body
//! with the code that belongs to its status, the answer the contract fixes
//! where it fixes one, and no secret shown.

use super::wire::half_closes;
use super::*;
// ------------------------------------------------------------------ checks

fn status_of(code: &str) -> Option<u16> {
    Some(match code {
        "invalid_json" | "invalid_signature" | "amount_mismatch" | "gateway_mismatch" => 400,
        "unauthorized" => 401,
        "not_found" => 404,
        "method_not_allowed" => 405,
        "out_of_stock" | "conflict" => 409,
        "payload_too_large" => 413,
        "invalid_request" => 422,
        "rate_limited" => 429,
        "unavailable" => 503,
        _ => return None,
    })
}

/// Whether `r` is the contract's error body; the reason if not.
fn contract_error(r: &Resp) -> Result<(), String> {
    let ct = r.header("content-type").unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(format!("Content-Type {ct:?}, not JSON"));
    }
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("body not JSON: {e}"))?;
    let top = v.as_object().ok_or("body not an object")?;
    if top.len() != 1 {
        return Err("body has more than `error`".into());
    }
    let err = v["error"].as_object().ok_or("`error` not an object")?;
    if err.len() != 2 {
        return Err("`error` is not exactly {code, message}".into());
    }
    let code = v["error"]["code"].as_str().ok_or("`code` not a string")?;
    let message = v["error"]["message"]
        .as_str()
        .ok_or("`message` not a string")?;
    if message.is_empty() {
        return Err("empty message".into());
    }
    match status_of(code) {
        Some(s) if s == r.status => {}
        Some(s) => return Err(format!("code {code} belongs to {s}, answered {}", r.status)),
        None => return Err(format!("code {code:?} is not in the contract")),
    }
    if matches!(r.status, 429 | 503) && r.header("retry-after").is_none() {
        return Err(format!("{} without Retry-After", r.status));
    }
    Ok(())
}

fn epay_fail(r: &Resp) -> Result<(), String> {
    let ct = r.header("content-type").unwrap_or("");
    if r.body != b"fail" || !ct.starts_with("text/plain") {
        return Err(format!("epay refusal is not plain `fail` ({ct:?})"));
    }
    Ok(())
}

/// Problems with one answer (empty if it is fine). `tokens` are the
/// seeded orders' secrets, which an error must never echo.
pub(super) fn judge(req: &Req, answer: &Result<Resp, String>, tokens: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let r = match answer {
        Ok(r) => r,
        Err(e) => {
            // A request that never finishes its body, or breaks the
            // protocol, may be dropped; any other needs an answer.
            if !(half_closes(req) || req.answer == Answer::Protocol) {
                problems.push(format!("no answer: {e}"));
            }
            return problems;
        }
    };
    if r.status >= 500 && r.status != 503 {
        problems.push(format!("server error {}", r.status));
    }
    let text = String::from_utf8_lossy(&r.body);
    for secret in [ADMIN, HMAC_SECRET, EPAY_KEY] {
        if text.contains(secret) {
            problems.push(format!("the answer shows the secret {secret:?}"));
        }
    }
    if !(200..300).contains(&r.status) && tokens.iter().any(|t| text.contains(t.as_str())) {
        problems.push("an error echoes an order token".into());
    }
    let reads = matches!(req.method.as_str(), "GET" | "HEAD") && req.route != Route::EpayNotify;
    if (200..300).contains(&r.status) && !reads {
        problems.push(format!("a malformed change was accepted ({})", r.status));
    }
    if let (Some((status, code)), false) = (req.expect, req.answer == Answer::Protocol) {
        let got = if r.body == b"fail" {
            "fail".to_string()
        } else {
            serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
                .unwrap_or_default()
        };
        let head_ok = req.method == "HEAD" && r.status == status;
        if !(matches!(r.status, 429 | 503) || head_ok || (r.status == status && got == code)) {
            problems.push(format!("expected {status} {code}, got {} {got}", r.status));
        }
    }
    if !(200..300).contains(&r.status) && req.method != "HEAD" {
        let ok = match req.answer {
            Answer::Json => contract_error(r),
            Answer::Epay => epay_fail(r),
            Answer::Protocol => Ok(()),
        };
        if let Err(e) = ok {
            problems.push(format!("not the contract's error: {e}"));
        }
    }
    problems
}
