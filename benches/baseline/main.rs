//! The baseline of `scripts/bench.sh`: a bare actix-web server with one route,
//! `GET /api/users/me`, that checks an HS256 bearer token and answers a small JSON body
//! (401 otherwise). Same crates and worker count (actix's default) as the service, nothing
//! else: the ceiling the service's authenticated reads are compared with.
//!
//! ```text
//! baseline                          serve on 127.0.0.1:$PORT (default 8081), key $JWT_SECRET
//! baseline token                    print a valid token for $JWT_SECRET (valid one hour)
//! baseline bcrypt-rate SECS [N]     hash at cost 12 on N threads (default: all cores) for
//!                                   SECS seconds, print hashes per second
//! baseline bcrypt-hash COST PASS    print one bcrypt hash of PASS at COST
//! ```

use std::{
    process::ExitCode,
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

const ISSUER: &str = "user-service";

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    iat: u64,
    exp: u64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [] => serve(),
        ["token"] => token().map(|t| println!("{t}")),
        ["bcrypt-rate", secs, rest @ ..] => bcrypt_rate(secs, rest.first().copied()),
        ["bcrypt-hash", cost, password] => bcrypt_hash(cost, password),
        _ => Err(
            "usage: baseline [token | bcrypt-rate SECS [THREADS] | bcrypt-hash COST PASSWORD]"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baseline: {e}");
            ExitCode::from(2)
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn secret() -> Result<Vec<u8>> {
    match std::env::var("JWT_SECRET") {
        Ok(s) if !s.is_empty() => Ok(s.into_bytes()),
        _ => Err("JWT_SECRET must be set".into()),
    }
}

fn token() -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        iss: ISSUER.into(),
        sub: "00000000-0000-0000-0000-000000000001".into(),
        iat: now,
        exp: now + 3600,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&secret()?),
    )?)
}

struct Keys {
    key: DecodingKey,
    validation: Validation,
}

async fn me(req: HttpRequest, keys: web::Data<Keys>) -> HttpResponse {
    let claims = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| jsonwebtoken::decode::<Claims>(t, &keys.key, &keys.validation).ok());
    match claims {
        Some(data) => HttpResponse::Ok().json(serde_json::json!({
            "id": data.claims.sub,
            "name": "Baseline User",
            "email": "baseline@example.com",
            "role": "user",
        })),
        None => HttpResponse::Unauthorized().finish(),
    }
}

fn serve() -> Result<()> {
    let port: u16 = std::env::var("PORT")
        .unwrap_or_else(|_| "8081".into())
        .parse()?;
    let secret = secret()?;
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let mut validation = Validation::new(Algorithm::HS256);
            validation.set_issuer(&[ISSUER]);
            App::new()
                .app_data(web::Data::new(Keys {
                    key: DecodingKey::from_secret(&secret),
                    validation,
                }))
                .route("/api/users/me", web::get().to(me))
        })
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })?;
    Ok(())
}

fn bcrypt_rate(secs: &str, threads: Option<&str>) -> Result<()> {
    let duration = Duration::from_secs_f64(secs.parse()?);
    let threads = match threads {
        Some(n) => n.parse()?,
        None => thread::available_parallelism()?.get(),
    };
    let hashes = AtomicU64::new(0);
    let start = Instant::now();
    thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while start.elapsed() < duration {
                    bcrypt::hash("benchmark password", 12).expect("bcrypt");
                    hashes.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    // Every hash started before the deadline is counted, over the time they all took.
    let rate = hashes.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!("{rate:.2}");
    Ok(())
}

fn bcrypt_hash(cost: &str, password: &str) -> Result<()> {
    println!("{}", bcrypt::hash(password, cost.parse()?)?);
    Ok(())
}
