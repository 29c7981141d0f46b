//! What the engine runs itself (sluice statements, literal INSERTs into
//! streams): one small function per statement kind, after the session's
//! privilege check. The rest goes to DataFusion (`handler`).

use futures::{Sink, SinkExt};
use pgwire::api::results::{Response, Tag};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::PgWireBackendMessage;

use super::copy::{copy_from_stdin, copy_to_stdout};
use super::privilege::check_parsed;
use super::roles::run_role;
use super::session::Session;
use super::to_pg_error;
use crate::engine::DdlOutcome;
use crate::error::Result;
use crate::sql::{self, AlterStream, CopyStatement, CreateTableAs, InsertValues, Parsed};

/// What a statement answers: its command tag, and the NOTICEs to send
/// before it (IF [NOT] EXISTS that found nothing to do).
struct Done {
    response: Response,
    notices: Vec<String>,
}

impl Done {
    fn tag(tag: &str) -> Done {
        Done::response(Response::Execution(Tag::new(tag)))
    }

    fn response(response: Response) -> Done {
        Done {
            response,
            notices: Vec::new(),
        }
    }

    /// `tag`, with a NOTICE for each outcome that was skipped.
    fn ddl(tag: &str, outcomes: Vec<DdlOutcome>) -> Done {
        Done {
            notices: outcomes
                .into_iter()
                .filter_map(|o| match o {
                    DdlOutcome::Skipped(notice) => Some(notice),
                    DdlOutcome::Done => None,
                })
                .collect(),
            ..Done::tag(tag)
        }
    }
}

impl Session {
    /// Runs what the engine executes itself; `Ok(None)` if `parsed` is
    /// for DataFusion.
    pub(super) async fn run_sluice<C>(
        &self,
        client: &mut C,
        parsed: Parsed,
    ) -> PgWireResult<Option<Response>>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        check_parsed(&self.engine, &self.activity, &parsed).map_err(to_pg_error)?;
        let Some(done) = self.execute(parsed).await.map_err(to_pg_error)? else {
            return Ok(None);
        };
        for notice in done.notices {
            send_notice(client, notice).await?;
        }
        Ok(Some(done.response))
    }

    async fn execute(&self, parsed: Parsed) -> Result<Option<Done>> {
        let engine = &self.engine;
        Ok(Some(match parsed {
            Parsed::CreateStream(create) => {
                Done::ddl("CREATE STREAM", vec![engine.create_stream(create).await?])
            }
            Parsed::CreateDerived(create) => {
                Done::ddl("CREATE STREAM", vec![engine.create_derived(create).await?])
            }
            Parsed::DropStream(drop) => Done::ddl("DROP STREAM", engine.drop_stream(drop).await?),
            Parsed::AlterStream(alter) => self.alter_stream(alter).await?,
            Parsed::CreateSink(create) => {
                Done::ddl("CREATE SINK", vec![engine.create_sink(*create).await?])
            }
            Parsed::DropSink(drop) => Done::ddl("DROP SINK", engine.drop_sink(drop).await?),
            Parsed::FlushSink(name) => {
                engine.flush_sink(&name).await?;
                Done::tag("FLUSH SINK")
            }
            Parsed::CreateExternalTable(sql) => Done::ddl(
                "CREATE TABLE",
                vec![engine.create_external_table(&sql).await?],
            ),
            Parsed::CreateTableAs(ctas) => self.create_table_as(ctas).await?,
            Parsed::DropTable(drop) => Done::ddl("DROP TABLE", engine.drop_table(drop).await?),
            Parsed::InsertValues { insert, .. } => return self.insert_values(&insert).await,
            Parsed::Copy(copy) => self.copy(copy).await?,
            Parsed::Savepoint(savepoint) => Done {
                notices: savepoint.notice.into_iter().collect(),
                ..Done::tag(savepoint.tag)
            },
            Parsed::Role(role) => {
                let tag = role.tag();
                Done::ddl(tag, vec![run_role(engine, role)?])
            }
            Parsed::Sql(_)
            | Parsed::ShowStreams
            | Parsed::ShowPipelines
            | Parsed::ShowSinks
            | Parsed::ExplainCreateDerived(_) => return Ok(None),
        }))
    }

    async fn alter_stream(&self, alter: AlterStream) -> Result<Done> {
        // The tag names what the client wrote (psql shows it).
        let tag = match sql::leading_words(&alter.statement, 2).get(1) {
            Some(word) if word == "TABLE" => "ALTER TABLE",
            _ => "ALTER STREAM",
        };
        Ok(Done::ddl(tag, vec![self.engine.alter_stream(alter).await?]))
    }

    async fn create_table_as(&self, ctas: CreateTableAs) -> Result<Done> {
        let (outcome, rows) = self.engine.create_table_as(ctas, &self.ctx).await?;
        Ok(Done {
            response: Response::Execution(Tag::new("SELECT").with_rows(rows as usize)),
            ..Done::ddl("SELECT", vec![outcome])
        })
    }

    /// A literal INSERT into a stream; `None` when the table is not a
    /// stream (DataFusion inserts into it).
    async fn insert_values(&self, insert: &InsertValues) -> Result<Option<Done>> {
        let Some(writer) = self.engine.writer(&insert.table)? else {
            return Ok(None);
        };
        let rows = writer.insert_values(insert).await?;
        Ok(Some(Done::response(Response::Execution(
            Tag::new("INSERT").with_oid(0).with_rows(rows as usize),
        ))))
    }

    async fn copy(&self, copy: CopyStatement) -> Result<Done> {
        let response = if copy.from_stdin {
            copy_from_stdin(&self.engine, &self.activity, &self.copy, copy).await?
        } else {
            copy_to_stdout(&self.ctx, copy).await?
        };
        Ok(Done::response(response))
    }
}

async fn send_notice<C>(client: &mut C, message: String) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let notice = ErrorInfo::new("NOTICE".into(), "00000".into(), message);
    client
        .send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
            notice,
        )))
        .await?;
    Ok(())
}
