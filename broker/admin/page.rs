//! The status page: one HTML document rendered from a [`StatusReport`], with inline CSS, no
//! script, no external asset (it works on a machine with no internet access and passes a
//! Content-Security-Policy of `default-src 'none'`), refreshed by the browser every
//! [`REFRESH_SECS`] seconds (`<meta http-equiv="refresh">`).
//!
//! Every figure sits in an element with `data-field` (and `data-participant` or
//! `data-country` where it belongs to one), so tests and scrapers find it without parsing
//! the layout. Every text from outside is HTML-escaped.

use std::fmt::Write;

use chrono::{DateTime, SecondsFormat, Utc};

use super::status::{Counts, StatusReport, TakedownFigures, human_duration};

/// Seconds between two refreshes of the page.
pub const REFRESH_SECS: u32 = 10;

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
        .replace('T', " ")
        .replace('Z', " UTC")
}

fn percent(x: f64) -> String {
    format!("{:.0} %", x * 100.0)
}

const STYLE: &str = r#"
:root { --ok:#1a7f37; --bad:#b42318; --warn:#9a6700; --muted:#57606a; --line:#d0d7de; --head:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0; color: #1f2328; background: #fff; }
header { padding: 16px 24px; border-bottom: 1px solid var(--line); display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: baseline; }
header h1 { font-size: 20px; margin: 0; }
header .meta { color: var(--muted); font-size: 13px; }
main { padding: 8px 24px 32px; max-width: 1400px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 6px 10px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; font-size: 13px; }
td.n, th.n { text-align: right; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600; color: #fff; }
.ok { background: var(--ok); } .bad { background: var(--bad); } .warn { background: var(--warn); }
.alert { color: var(--bad); font-weight: 600; }
.warn-text { color: var(--warn); font-weight: 600; }
.muted { color: var(--muted); }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; word-break: break-all; }
ul.attention { margin: 8px 0; padding: 10px 14px 10px 30px; border: 1px solid var(--bad); border-radius: 6px; background: #fff5f5; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 0 32px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; }
.sub { color: var(--muted); font-size: 12px; }
"#;

/// The whole page.
pub fn render(r: &StatusReport) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let attention = r.attention(r.inbox_age_warn_secs);
    // Writing into a String cannot fail; the `let _ =` below ignore an impossible error.
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>referral-broker · {broker}</title><style>{STYLE}</style></head><body>\n",
        broker = escape(&r.broker),
    );
    let (badge, label) = if r.readiness.ready {
        ("ok", "ready")
    } else {
        ("bad", "not ready")
    };
    let _ = write!(
        h,
        "<header><h1>referral-broker <span class=\"mono\">{broker}</span></h1>\
         <span class=\"badge {badge}\" data-field=\"readiness\">{label}</span>\
         <span class=\"meta\">generated <span data-field=\"generated-at\">{generated}</span> · \
         up since {started} · version {version} · refreshes every {REFRESH_SECS} s</span></header>\n<main>\n",
        broker = escape(&r.broker),
        generated = time(&r.generated_at),
        started = time(&r.started_at),
        version = escape(&r.version),
    );

    if !r.readiness.ready || !attention.is_empty() {
        h.push_str("<h2>Needs attention</h2><ul class=\"attention\" data-field=\"attention\">");
        for a in &attention {
            let _ = write!(
                h,
                "<li data-what=\"{what}\"><strong>{what}</strong>: {detail}</li>",
                what = escape(&a.what),
                detail = escape(&a.detail)
            );
        }
        h.push_str("</ul>\n");
    }
    if !r.history.complete {
        let _ = write!(
            h,
            "<p class=\"muted\">Still reading the audit log found at start ({} entries so far): \
             the hour/day counts and takedown figures are incomplete.</p>",
            r.history.entries
        );
    }

    participants(&mut h, r);
    takedown(&mut h, r);

    h.push_str("<div class=\"grid\">");
    audit(&mut h, r);
    connection(&mut h, r);
    h.push_str("</div>");

    rejections(&mut h, r);
    h.push_str("</main></body></html>\n");
    h
}

fn counts_cells(h: &mut String, id: &str, hour: &Counts, day: &Counts) {
    let cells: [(&str, u64, u64); 4] = [
        ("delivered", hour.delivered, day.delivered),
        ("received", hour.received, day.received),
        ("rejected", hour.rejected, day.rejected),
        ("duplicates", hour.duplicates, day.duplicates),
    ];
    for (name, a, b) in cells {
        let class = if name == "rejected" && a > 0 {
            "n alert"
        } else {
            "n"
        };
        let _ = write!(
            h,
            "<td class=\"{class}\"><span data-participant=\"{id}\" data-field=\"{name}-hour\">{a}</span> \
             <span class=\"muted\">/</span> <span data-participant=\"{id}\" data-field=\"{name}-day\">{b}</span></td>"
        );
    }
}

fn participants(h: &mut String, r: &StatusReport) {
    h.push_str(
        "<h2>Participants</h2><table data-field=\"participants\"><thead><tr>\
         <th>Participant</th><th>Role</th><th class=\"n\">Inbox</th><th class=\"n\">Readers</th>\
         <th>Oldest unread</th>\
         <th class=\"n\">Delivered to<div class=\"sub\">1 h / 24 h</div></th>\
         <th class=\"n\">Sent<div class=\"sub\">1 h / 24 h</div></th>\
         <th class=\"n\">Rejected<div class=\"sub\">1 h / 24 h</div></th>\
         <th class=\"n\">Duplicates<div class=\"sub\">1 h / 24 h</div></th>\
         </tr></thead><tbody>",
    );
    for p in &r.participants {
        let id = escape(&p.id);
        let _ = write!(
            h,
            "<tr><td><span class=\"mono\">{id}</span><div class=\"sub\">{name}</div></td><td>{role}{country}</td>",
            name = escape(&p.name),
            role = escape(&p.role),
            country = p
                .country
                .as_deref()
                .map(|c| format!(" · {}", escape(c)))
                .unwrap_or_default(),
        );
        match &p.inbox {
            None => {
                let _ = write!(
                    h,
                    "<td class=\"n muted\" data-participant=\"{id}\" data-field=\"inbox-depth\">?</td>\
                     <td class=\"n muted\">?</td><td class=\"muted\">not polled yet</td>"
                );
            }
            Some(i) => {
                // Messages waiting and nobody connected to read them.
                let unread = if i.depth > 0 && i.consumers == 0 {
                    " warn-text"
                } else {
                    ""
                };
                let _ = write!(
                    h,
                    "<td class=\"n{unread}\" data-participant=\"{id}\" data-field=\"inbox-depth\">{}</td>\
                     <td class=\"n{unread}\" data-participant=\"{id}\" data-field=\"inbox-consumers\">{}</td>",
                    i.depth, i.consumers
                );
                match &i.oldest {
                    None => h.push_str("<td class=\"muted\">—</td>"),
                    Some(o) => {
                        let late = o.age_secs > r.inbox_age_warn_secs;
                        let _ = write!(
                            h,
                            "<td><span class=\"{class}\" data-participant=\"{id}\" data-field=\"oldest-age\" \
                             data-secs=\"{secs}\">{least}{age}</span> <span class=\"muted\">{kind}</span>\
                             <div class=\"sub mono\" data-participant=\"{id}\" data-field=\"oldest-envelope\">{env}</div>\
                             <div class=\"sub\">delivered {at}</div></td>",
                            class = if late { "alert" } else { "" },
                            secs = o.age_secs,
                            least = if o.at_least { "≥ " } else { "" },
                            age = human_duration(o.age_secs),
                            kind = escape(&o.kind),
                            env = escape(o.envelope.as_deref().unwrap_or("")),
                            at = time(&o.delivered_at),
                        );
                    }
                }
            }
        }
        counts_cells(h, &id, &p.last_hour, &p.last_day);
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table>\n");
}

fn takedown_row(h: &mut String, f: &TakedownFigures) {
    let c = escape(&f.country);
    let _ = write!(
        h,
        "<tr><td>{label}</td><td class=\"n\" data-country=\"{c}\" data-field=\"removed\">{removed}</td>\
         <td class=\"n\" data-country=\"{c}\" data-field=\"median\" data-secs=\"{m}\">{mh}</td>\
         <td class=\"n\" data-country=\"{c}\" data-field=\"p90\" data-secs=\"{p}\">{ph}</td>\
         <td class=\"n\" data-country=\"{c}\" data-field=\"within-3-days\">{w}</td></tr>",
        label = if f.country == "all" {
            "<strong>all countries</strong>".to_owned()
        } else {
            c.clone()
        },
        removed = f.removed,
        m = f.median_secs,
        mh = human_duration(f.median_secs),
        p = f.p90_secs,
        ph = human_duration(f.p90_secs),
        w = percent(f.within_3_days),
    );
}

fn takedown(h: &mut String, r: &StatusReport) {
    let t = &r.takedown;
    let _ = write!(
        h,
        "<h2>Notice and takedown <span class=\"sub\">time from the public report to removal, \
         removals of the last {} days, per destination country</span></h2>",
        t.window_days
    );
    if t.countries.is_empty() {
        h.push_str("<p class=\"muted\" data-field=\"takedown-none\">No removal reported yet.</p>");
    } else {
        h.push_str(
            "<table data-field=\"takedown\"><thead><tr><th>Country</th><th class=\"n\">Removed</th>\
             <th class=\"n\">Median</th><th class=\"n\">90th percentile</th>\
             <th class=\"n\">Within 3 days</th></tr></thead><tbody>",
        );
        for f in &t.countries {
            takedown_row(h, f);
        }
        if let Some(all) = &t.all {
            takedown_row(h, all);
        }
        h.push_str("</tbody></table>");
    }
    if t.unknown > 0 {
        let _ = write!(
            h,
            "<p class=\"muted\">{} removal(s) without times (bodies purged).</p>",
            t.unknown
        );
    }
    h.push('\n');
}

fn audit(h: &mut String, r: &StatusReport) {
    h.push_str("<section><h2>Audit log</h2><dl>");
    let _ = write!(
        h,
        "<dt>Entries</dt><dd data-field=\"log-entries\">{}</dd><dt>Size</dt><dd data-field=\"log-bytes\">{}</dd>",
        r.audit_log.entries,
        bytes(r.audit_log.bytes)
    );
    match &r.checkpoint {
        None => h.push_str(
            "<dt>Last checkpoint</dt><dd class=\"muted\" data-field=\"checkpoint\">none yet</dd>",
        ),
        Some(c) => {
            let _ = write!(
                h,
                "<dt>Last checkpoint</dt><dd data-field=\"checkpoint-time\">{}</dd>\
                 <dt>Tree size</dt><dd data-field=\"checkpoint-size\">{}</dd>\
                 <dt>Root</dt><dd class=\"mono\" data-field=\"checkpoint-root\">{}</dd>",
                time(&c.time),
                c.size,
                escape(&c.root)
            );
        }
    }
    if let Some(age) = r.checkpoint_age_secs {
        let late = age > r.checkpoint_age_warn_secs;
        let _ = write!(
            h,
            "<dt>{what}</dt><dd class=\"{class}\" data-field=\"checkpoint-age\" data-secs=\"{age}\">{}</dd>",
            human_duration(age),
            what = if r.checkpoint.is_some() {
                "Since the checkpoint"
            } else {
                "Since the first entry"
            },
            class = if late { "alert" } else { "" },
        );
    }
    h.push_str("</dl></section>");
}

fn connection(h: &mut String, r: &StatusReport) {
    let c = &r.connection;
    h.push_str("<section><h2>RabbitMQ</h2><dl>");
    let class = match c.state.as_str() {
        "up" => "ok",
        "starting" => "warn",
        _ => "bad",
    };
    let _ = write!(
        h,
        "<dt>Connection</dt><dd><span class=\"badge {class}\" data-field=\"connection\">{}</span>{}</dd>\
         <dt>Reconnections</dt><dd data-field=\"reconnections\">{}</dd>\
         <dt>In process / held</dt><dd><span data-field=\"in-flight\">{}</span> / <span data-field=\"held\">{}</span></dd>",
        escape(&c.state),
        if c.blocked {
            " <span class=\"alert\">blocked (memory or disk alarm)</span>"
        } else {
            ""
        },
        c.reconnections,
        r.in_flight,
        r.held
    );
    if let Some(e) = &c.last_error {
        let _ = write!(
            h,
            "<dt>Last error</dt><dd class=\"alert\">{}</dd>",
            escape(e)
        );
    }
    for q in &r.queues {
        let n = escape(&q.name);
        let _ = write!(
            h,
            "<dt>Queue {n}</dt><dd><span data-field=\"queue-depth\" data-queue=\"{n}\">{}</span> \
             <span class=\"muted\">message(s), {} consumer(s)</span></dd>",
            q.depth, q.consumers
        );
    }
    h.push_str("</dl></section>");
}

fn rejections(h: &mut String, r: &StatusReport) {
    h.push_str("<h2>Recent rejections</h2>");
    if r.recent_rejections.is_empty() {
        h.push_str("<p class=\"muted\" data-field=\"rejections-none\">None.</p>");
        return;
    }
    h.push_str(
        "<table data-field=\"rejections\"><thead><tr><th>Time</th><th>Reason</th><th>Sender</th>\
         <th>Envelope</th><th class=\"n\">Entry</th></tr></thead><tbody>",
    );
    for x in &r.recent_rejections {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"mono\" data-field=\"rejection-code\">{}</td>\
             <td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"n\">{}</td></tr>",
            time(&x.time),
            escape(&x.code),
            escape(x.participant.as_deref().unwrap_or("(not authenticated)")),
            escape(x.envelope.as_deref().unwrap_or("—")),
            x.seq
        );
    }
    h.push_str("</tbody></table>\n");
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::status::*;

    pub(crate) fn sample() -> StatusReport {
        let now = Utc::now();
        StatusReport {
            broker: "net.broker".into(),
            version: "0.1.0".into(),
            generated_at: now,
            started_at: now,
            readiness: Readiness {
                ready: true,
                reasons: vec![],
            },
            connection: ConnectionStatus {
                state: "up".into(),
                generation: Some(1),
                reconnections: 0,
                failed_attempts: 0,
                blocked: false,
                last_error: None,
            },
            in_flight: 0,
            held: 0,
            inbox_age_warn_secs: 60,
            participants: vec![ParticipantStatus {
                id: "nl.hotline".into(),
                name: "<NL> & co".into(),
                role: "hotline".into(),
                country: Some("NL".into()),
                inbox: Some(InboxStatus {
                    depth: 2,
                    consumers: 0,
                    oldest: Some(OldestUnread {
                        delivered_at: now,
                        age_secs: 120,
                        envelope: None,
                        kind: "referral".into(),
                        at_least: false,
                    }),
                    checked_at: now,
                }),
                last_hour: Counts {
                    delivered: 2,
                    ..Counts::default()
                },
                last_day: Counts {
                    delivered: 5,
                    ..Counts::default()
                },
            }],
            queues: vec![],
            takedown: TakedownStatus {
                window_days: 365,
                countries: vec![],
                all: None,
                unknown: 0,
            },
            checkpoint: None,
            checkpoint_age_secs: None,
            checkpoint_age_warn_secs: 900,
            audit_log: AuditLogStatus {
                entries: 9,
                bytes: 2048,
            },
            recent_rejections: vec![],
            history: HistoryStatus {
                complete: true,
                entries: 9,
            },
        }
    }

    #[test]
    fn page_escapes_and_marks_figures() {
        let html = render(&sample());
        assert!(html.contains("&lt;NL&gt; &amp; co"));
        assert!(!html.contains("<NL>"));
        assert!(html.contains(
            "<span data-participant=\"nl.hotline\" data-field=\"delivered-day\">5</span>"
        ));
        assert!(html.contains("data-field=\"oldest-age\" data-secs=\"120\""));
        // 120 s is over the 60 s threshold: flagged.
        assert!(html.contains("<li data-what=\"inbox_backlog\">"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
