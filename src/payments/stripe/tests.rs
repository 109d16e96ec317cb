use super::*;

fn gateway() -> StripeGateway {
    let cfg = StripeConfig {
        secret_key: "sk_test_1".into(),
        webhook_secret: "whsec_test".into(),
        ..StripeConfig::default()
    };
    StripeGateway::new(&cfg, "https://shop.example/", "USD")
}

fn header(t: i64, body: &str, secret: &str) -> String {
    format!("t={t},v1={}", hex::encode(sign(secret, t, body.as_bytes())))
}

fn check(sig: &str, body: &str, now: i64) -> Result<Notice, Error> {
    let headers = vec![("Stripe-Signature", sig)];
    gateway().notice(&CallbackRequest {
        headers: &headers,
        query: "",
        body: body.as_bytes(),
        now_secs: now,
    })
}

fn session(status: &str, amount: u64, currency: &str) -> String {
    serde_json::json!({
        "id": "evt_1",
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": "cs_test_1",
            "object": "checkout.session",
            "client_reference_id": "F0000000000000001",
            "amount_total": amount,
            "currency": currency,
            "payment_status": status,
            "metadata": {"order_no": "F0000000000000001"},
        }},
    })
    .to_string()
}

/// The signature is HMAC-SHA256 of `t.body` in lower-case hex, as
/// Stripe's SDKs compute it.
#[test]
fn the_signature_is_hmac_of_the_timestamp_dot_body() {
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
    mac.update(b"1492774577.{\"id\":\"evt_1\"}");
    let want: [u8; 32] = mac.finalize().into_bytes().into();
    assert_eq!(sign("whsec_test", 1492774577, b"{\"id\":\"evt_1\"}"), want);
}

#[test]
fn signature_headers_parse_as_stripe_writes_them() {
    let h = parse_signature_header(
        "t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,\
         v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
    )
    .unwrap();
    assert_eq!(h.timestamp, 1492774577);
    assert_eq!(h.v1.len(), 1);
    for bad in [
        "",
        "t=1",
        "v1=00",
        "t=x,v1=00",
        "t=1,t=2,v1=00",
        "t=1,v1=zz",
        "garbage",
    ] {
        assert_eq!(
            parse_signature_header(bad).unwrap_err().code(),
            "invalid_signature",
            "{bad:?}"
        );
    }
}

/// A paid session in the shop's currency verifies; any one of several
/// `v1` may match (a secret being rolled).
#[test]
fn a_signed_completed_session_verifies() {
    let body = session("paid", 1380, "usd");
    let now = 1_700_000_000;
    let rolled = format!(
        "{},v1={}",
        header(now, &body, "whsec_old"),
        hex::encode(sign("whsec_test", now, body.as_bytes()))
    );
    for sig in [header(now, &body, "whsec_test"), rolled] {
        let Notice::Payment(p) = check(&sig, &body, now + 10).unwrap() else {
            panic!("a payment")
        };
        assert_eq!(
            p,
            VerifiedPayment {
                order_no: "F0000000000000001".into(),
                trade_no: "cs_test_1".into(),
                amount: 1380,
                succeeded: true,
            }
        );
    }
}

#[test]
fn forged_or_other_events_are_refused_or_ignored() {
    let body = session("paid", 1380, "usd");
    let now = 1_700_000_000;
    let code = |sig: &str, body: &str, at: i64| check(sig, body, at).err().map(|e| e.code());
    assert_eq!(
        code(&header(now, &body, "whsec_other"), &body, now),
        Some("invalid_signature")
    );
    assert_eq!(
        code(&header(now - 301, &body, "whsec_test"), &body, now),
        Some("invalid_signature")
    );
    assert_eq!(
        code(&header(now + 301, &body, "whsec_test"), &body, now),
        Some("invalid_signature")
    );
    let tampered = body.replace("1380", "1");
    assert_eq!(
        code(&header(now, &body, "whsec_test"), &tampered, now),
        Some("invalid_signature")
    );
    for (status, currency) in [("unpaid", "usd"), ("paid", "eur"), ("paid", "USD")] {
        let b = session(status, 1380, currency);
        let Notice::Payment(p) = check(&header(now, &b, "whsec_test"), &b, now).unwrap() else {
            panic!("a payment")
        };
        assert!(!p.succeeded, "{status} {currency}");
    }
    let other = r#"{"id":"evt_2","type":"payment_intent.created","data":{"object":{}}}"#;
    assert!(matches!(
        check(&header(now, other, "whsec_test"), other, now).unwrap(),
        Notice::Other(kind) if kind == "payment_intent.created"
    ));
}

/// The session names the order, its amount in minor units, the shop's
/// currency in lower case, and returns to the order page.
#[test]
fn the_session_form_names_the_order() {
    let mut order = Order::pending_for_test("F1", "b@x.com", "1", 0);
    order.amount = 1380;
    let now = 1_700_000_000;
    order.expires_at_ms = (now + 2 * 3600) * 1000;
    let form = gateway().session_form(&order, "t0ken", "Game card", now);
    let get = |k: &str| form.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("mode"), Some("payment"));
    assert_eq!(get("client_reference_id"), Some("F1"));
    assert_eq!(get("line_items[0][price_data][unit_amount]"), Some("1380"));
    assert_eq!(get("line_items[0][price_data][currency]"), Some("usd"));
    assert_eq!(
        get("line_items[0][price_data][product_data][name]"),
        Some("Game card")
    );
    assert_eq!(
        get("success_url"),
        Some("https://shop.example/orders/F1?token=t0ken")
    );
    assert_eq!(get("metadata[order_no]"), Some("F1"));
    let expires = (now + 2 * 3600).to_string();
    assert_eq!(get("expires_at"), Some(expires.as_str()));
}

/// The session closes when the hold ends, moved into Stripe's window of 30
/// minutes to 24 hours after its creation (a minute inside each end).
#[test]
fn the_session_closes_with_the_hold_within_stripes_window() {
    let now = 1_700_000_000;
    assert_eq!(session_expiry(now + 15 * 60, now), now + 31 * 60);
    assert_eq!(session_expiry(now - 60, now), now + 31 * 60);
    assert_eq!(session_expiry(now + 31 * 60, now), now + 31 * 60);
    assert_eq!(session_expiry(now + 3600, now), now + 3600);
    assert_eq!(
        session_expiry(now + 24 * 3600 - 60, now),
        now + 24 * 3600 - 60
    );
    assert_eq!(session_expiry(now + 30 * 3600, now), now + 24 * 3600 - 60);
}

/// `t` exactly 300 s away is still accepted; the same valid `v1` twice is
/// still valid (every candidate is compared, none cancels another).
#[test]
fn the_tolerance_is_inclusive_and_repeated_candidates_still_match() {
    let body = session("paid", 1380, "usd");
    let now = 1_700_000_000;
    for t in [now - 300, now + 300] {
        assert!(
            check(&header(t, &body, "whsec_test"), &body, now).is_ok(),
            "{t}"
        );
    }
    let good = header(now, &body, "whsec_test");
    let twice = format!("{good},{}", good.split_once(',').unwrap().1);
    assert!(check(&twice, &body, now).is_ok());
}

/// The buyer pays through faka's `/pay` page, which starts a Checkout
/// Session (a page to go to) within the configured time.
#[test]
fn payment_starts_at_faka_then_redirects_to_stripe() {
    let order = Order::pending_for_test("F1", "b@x.com", "1", 0);
    let g = gateway();
    assert_eq!(
        g.pay_url(&order, "t0ken").as_deref(),
        Some("https://shop.example/pay/F1?token=t0ken")
    );
    let starter = g.session_starter().expect("stripe starts sessions");
    assert_eq!(starter.kind(), SessionKind::Redirect);
    assert_eq!(starter.timeout(), Duration::from_millis(5000));
    assert_eq!(g.id(), Gateway::Stripe);
}
