//! Vendor-like block pages, written from the markers the vendors are publicly known by.

use http::{Response, StatusCode};

/// The vendors `/blocked/{vendor}` and `/guarded/{page}?vendor=` can play.
pub const BLOCK_VENDORS: &[&str] = &[
    "cloudflare",
    "akamai",
    "perimeterx",
    "datadome",
    "imperva",
    "aws-waf",
    "kasada",
    "f5",
    "sucuri",
    "ddos-guard",
    "google",
    "linkedin",
    "captcha",
    "empty",
];

/// A block page as `vendor` would send it; `None` for a vendor the server does not play.
/// `ray` makes each page's ids differ.
pub(crate) fn block_page(vendor: &str, ray: u64) -> Option<Response<String>> {
    let (status, headers, body): (u16, Vec<(&str, String)>, String) = match vendor {
        "cloudflare" => (
            403,
            vec![
                ("server", "cloudflare".into()),
                ("cf-ray", format!("{ray:016x}-AMS")),
                ("cf-mitigated", "challenge".into()),
                ("content-type", "text/html; charset=UTF-8".into()),
            ],
            format!(
                "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title></head><body>\
                 <noscript>Enable JavaScript and cookies to continue</noscript>\
                 <script src=\"/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray={ray:x}\"></script>\
                 </body></html>"
            ),
        ),
        "akamai" => (
            403,
            vec![
                ("server", "AkamaiGHost".into()),
                ("content-type", "text/html".into()),
            ],
            format!(
                "<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n\
                 You don't have permission to access \"http&#58;&#47;&#47;shop&#46;test&#47;\" on this server.<P>\n\
                 Reference&#32;&#35;18&#46;{ray:x}\n<P>https&#58;&#47;&#47;errors&#46;edgesuite&#46;net&#47;18&#46;{ray:x}</P>\n</BODY>\n</HTML>"
            ),
        ),
        "perimeterx" => (
            403,
            vec![
                ("content-type", "text/html".into()),
                ("set-cookie", format!("_pxhd={ray:x}; Path=/")),
            ],
            format!(
                "<html><head><title>Access to this page has been denied</title>\
                 <script>window._pxAppId = 'PXabc{ray}';</script></head><body>\
                 <p>Press &amp; Hold to confirm you are a human (and not a bot).</p>\
                 <div id=\"px-captcha\"></div><script src=\"https://captcha.px-cdn.net/PXabc/captcha.js\"></script>\
                 </body></html>"
            ),
        ),
        "datadome" => (
            403,
            vec![
                ("x-datadome", "protected".into()),
                ("set-cookie", format!("datadome={ray:x}; Max-Age=31536000; Path=/")),
                ("content-type", "text/html;charset=utf-8".into()),
            ],
            format!(
                "<html><head><title>shop.test</title></head><body>\
                 <script>var dd={{'rt':'c','cid':'{ray:x}','hsh':'AB12','host':'geo.captcha-delivery.com'}}</script>\
                 <script src=\"https://ct.captcha-delivery.com/c.js\"></script></body></html>"
            ),
        ),
        "imperva" => (
            403,
            vec![
                ("x-iinfo", format!("12-{ray}-0 NNNN CT(0 0 0) RT(0 0) q(0 0 0 -1) r(0 0)")),
                ("x-cdn", "Imperva".into()),
                ("content-type", "text/html".into()),
            ],
            format!(
                "<html><head><META NAME=\"robots\" CONTENT=\"noindex,nofollow\">\
                 <script src=\"/_Incapsula_Resource?SWJIYLWA=5074a744e2e3d891814e9a2dace20bd4,719d34d31c8e3a6e6fffd425f7e032f3\"></script>\
                 </head><body>Request unsuccessful. Incapsula incident ID: 1234000{ray}</body></html>"
            ),
        ),
        "aws-waf" => (
            405,
            vec![
                ("x-amzn-waf-action", "captcha".into()),
                ("content-type", "text/html; charset=UTF-8".into()),
            ],
            "<!DOCTYPE html><html><head><script src=\"https://captcha.awswaf.test/challenge.js\"></script>\
             <script>AwsWafIntegration.checkForceRefresh()</script></head><body><div id=\"captcha-container\"></div></body></html>"
                .to_owned(),
        ),
        "kasada" => (
            429,
            vec![
                ("x-kpsdk-ct", format!("0{ray:x}")),
                ("content-type", "text/html".into()),
            ],
            "<html><head><script>window.KPSDK={};KPSDK.now=typeof performance!=='undefined'&&performance.now?function(){return performance.now()}:Date.now;</script>\
             <script src=\"/149e9513-01fa-4fb0-aad4-566afd725d1b/2d206a39-8ed7-437e-a3be-862e0f06eea3/ips.js\"></script></head><body></body></html>"
                .to_owned(),
        ),
        "f5" => (
            200,
            vec![
                ("content-type", "text/html".into()),
                ("set-cookie", format!("TS01a2b3c4={ray:x}; Path=/")),
            ],
            format!(
                "<html><head><title>Request Rejected</title></head><body>\
                 The requested URL was rejected. Please consult with your administrator.<br><br>\
                 Your support ID is: {ray}<br><br><a href='javascript:history.back();'>[Go Back]</a></body></html>"
            ),
        ),
        "sucuri" => (
            403,
            vec![
                ("server", "Sucuri/Cloudproxy".into()),
                ("x-sucuri-id", "11005".into()),
                ("x-sucuri-block", format!("BLK{ray}")),
                ("content-type", "text/html".into()),
            ],
            "<!DOCTYPE html><html><head><title>Sucuri WebSite Firewall - Access Denied</title></head>\
             <body><h2>Access Denied - Sucuri Website Firewall</h2></body></html>"
                .to_owned(),
        ),
        "ddos-guard" => (
            403,
            vec![
                ("server", "ddos-guard".into()),
                ("set-cookie", format!("__ddg1_={ray:x}; Path=/")),
                ("content-type", "text/html".into()),
            ],
            "<!DOCTYPE html><html><head><title>DDoS-Guard</title></head><body>\
             <script src=\"https://check.ddos-guard.net/check.js\"></script></body></html>"
                .to_owned(),
        ),
        "google" => (
            429,
            vec![("content-type", "text/html".into())],
            format!(
                "<html><head><title>https://www.google.com/sorry/index?continue=https://www.google.com/search</title></head>\
                 <body><div>Our systems have detected unusual traffic from your computer network. \
                 This page checks to see if it's really you sending the requests, and not a robot.</div>\
                 <form id=\"captcha-form\" action=\"index\" method=\"post\"><input type='hidden' name='q' value='{ray:x}'></form></body></html>"
            ),
        ),
        "linkedin" => (
            999,
            vec![("content-type", "text/html".into())],
            "<html><head><script>window.location.href = 'https://www.linkedin.test/';</script></head></html>".to_owned(),
        ),
        "captcha" => (
            200,
            vec![("content-type", "text/html; charset=utf-8".into())],
            "<!doctype html><html><head><title>Robot Check</title></head><body>\
             <form method=\"get\" action=\"/errors/validateCaptcha\"><h4>Enter the characters you see below</h4>\
             <img src=\"/captcha/img.jpg\"><input name=\"field-keywords\"></form></body></html>"
                .to_owned(),
        ),
        "empty" => (
            200,
            vec![("content-type", "text/html; charset=utf-8".into())],
            String::new(),
        ),
        _ => return None,
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).ok()?;
    for (name, value) in headers {
        response.headers_mut().append(name, value.parse().ok()?);
    }
    Some(response)
}
