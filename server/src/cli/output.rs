//! Streamed result output for the CLI and the shell: rows are written as
//! they arrive, in a bounded amount of memory whatever the result's size
//! (the table format holds its first rows to size the columns, then goes
//! on with those widths).

use std::io::{self, Write};

use clap::ValueEnum;
use deeb_proto::{value, Row, Value};

use super::table::format_value;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header and a row count.
    Table,
    /// RFC 4180 CSV with a header line; NULL is an empty field.
    Csv,
    /// One JSON array of objects (column name to value).
    Json,
    /// One JSON object per line.
    Ndjson,
    /// One `column = value` line per value, a blank line between rows.
    Line,
    /// A Markdown (GitHub) table.
    Markdown,
}

/// Rows the table format holds to size its columns before it prints.
pub const TABLE_SIZING_ROWS: usize = 1_000;

/// Writes one result set, row by row, to `out`.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    headers: bool,
    null: String,
    columns: Vec<String>,
    /// Table format: rows held until the widths are known.
    held: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
    rows: u64,
}

impl<W: Write> Printer<W> {
    /// A printer for one result whose columns are `columns`. `null` is how
    /// NULL shows in the text formats (table, line, markdown).
    pub fn new(out: W, format: Format, headers: bool, null: &str, columns: Vec<String>) -> Self {
        Printer { out, format, headers, null: null.to_owned(), columns, held: Vec::new(), widths: None, rows: 0 }
    }

    /// Writes one row (the table format may hold it for a while).
    ///
    /// # Errors
    /// Writing failed (e.g. a closed pipe).
    pub fn row(&mut self, row: &Row) -> io::Result<()> {
        if self.rows == 0 {
            self.start()?;
        }
        self.rows += 1;
        match self.format {
            Format::Table => {
                let cells = self.text_cells(row);
                match &self.widths {
                    Some(widths) => {
                        let line = table_line(&cells, widths);
                        self.out.write_all(line.as_bytes())?;
                    }
                    None => {
                        self.held.push(cells);
                        if self.held.len() >= TABLE_SIZING_ROWS {
                            self.flush_held()?;
                        }
                    }
                }
            }
            Format::Csv => {
                let fields: Vec<String> = row.values.iter().map(csv_field).collect();
                writeln!(self.out, "{}", fields.join(","))?;
            }
            Format::Json => {
                let separator = if self.rows == 1 { "" } else { ",\n" };
                write!(self.out, "{separator}{}", json_object(&self.columns, row))?;
            }
            Format::Ndjson => writeln!(self.out, "{}", json_object(&self.columns, row))?,
            Format::Line => {
                if self.rows > 1 {
                    writeln!(self.out)?;
                }
                let width = self.columns.iter().map(|name| name.chars().count()).max().unwrap_or(0);
                for (name, cell) in self.columns.iter().zip(self.text_cells(row)) {
                    writeln!(self.out, "{name:>width$} = {cell}")?;
                }
            }
            Format::Markdown => {
                let cells: Vec<String> = self.text_cells(row).iter().map(|cell| markdown_cell(cell)).collect();
                writeln!(self.out, "| {} |", cells.join(" | "))?;
            }
        }
        Ok(())
    }

    /// Ends the result (headers of an empty result, the row count, the
    /// JSON array's end) and flushes.
    ///
    /// # Errors
    /// Writing failed.
    pub fn finish(mut self) -> io::Result<u64> {
        if self.rows == 0 {
            self.start()?;
        }
        match self.format {
            Format::Table => {
                self.flush_held()?;
                let plural = if self.rows == 1 { "" } else { "s" };
                writeln!(self.out, "({} row{plural})", self.rows)?;
            }
            Format::Json => writeln!(self.out, "{}]", if self.rows == 0 { "" } else { "\n" })?,
            Format::Csv | Format::Ndjson | Format::Line | Format::Markdown => {}
        }
        self.out.flush()?;
        Ok(self.rows)
    }

    /// What comes before the first row.
    fn start(&mut self) -> io::Result<()> {
        match self.format {
            Format::Csv if self.headers => {
                let names: Vec<String> = self.columns.iter().map(|name| csv_text(name)).collect();
                writeln!(self.out, "{}", names.join(","))
            }
            Format::Json => write!(self.out, "["),
            Format::Markdown if self.headers => {
                let names: Vec<String> = self.columns.iter().map(|name| markdown_cell(name)).collect();
                writeln!(self.out, "| {} |", names.join(" | "))?;
                writeln!(self.out, "|{}", "---|".repeat(self.columns.len()))
            }
            _ => Ok(()),
        }
    }

    /// Table format: the widths from the held rows, then the header and
    /// those rows.
    fn flush_held(&mut self) -> io::Result<()> {
        if self.widths.is_some() {
            return Ok(());
        }
        let widths = column_widths(&self.columns, &self.held);
        if self.headers {
            self.out.write_all(table_line(&self.columns, &widths).as_bytes())?;
            let rule: Vec<String> = widths.iter().map(|width| "-".repeat(width + 2)).collect();
            writeln!(self.out, "{}", rule.join("+"))?;
        }
        for cells in std::mem::take(&mut self.held) {
            self.out.write_all(table_line(&cells, &widths).as_bytes())?;
        }
        self.widths = Some(widths);
        Ok(())
    }

    fn text_cells(&self, row: &Row) -> Vec<String> {
        row.values
            .iter()
            .map(|value| if value.kind.is_none() { self.null.clone() } else { format_value(value) })
            .collect()
    }
}

/// Writes a whole result at once (rows already in memory).
///
/// # Errors
/// Writing failed.
pub fn print_all<W: Write>(out: W, format: Format, columns: &[String], rows: &[Row]) -> io::Result<()> {
    let mut printer = Printer::new(out, format, true, "NULL", columns.to_vec());
    for row in rows {
        printer.row(row)?;
    }
    printer.finish().map(drop)
}

pub(crate) fn column_widths(columns: &[String], cells: &[Vec<String>]) -> Vec<usize> {
    let count = columns.len().max(cells.iter().map(Vec::len).max().unwrap_or(0));
    (0..count)
        .map(|index| {
            let header = columns.get(index).map_or(0, |name| name.chars().count());
            let widest = cells.iter().filter_map(|row| row.get(index)).map(|cell| cell.chars().count()).max();
            header.max(widest.unwrap_or(0))
        })
        .collect()
}

pub(crate) fn table_line(cells: &[String], widths: &[usize]) -> String {
    let padded: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(index, width)| {
            let cell = cells.get(index).map_or("", String::as_str);
            format!(" {cell:<width$} ")
        })
        .collect();
    let mut text = padded.join("|").trim_end().to_owned();
    text.push('\n');
    text
}

fn csv_field(value: &Value) -> String {
    match &value.kind {
        None => String::new(),
        Some(value::Kind::Text(text)) => csv_text(text),
        Some(_) => format_value(value),
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break (or is
/// empty text, so it differs from NULL).
fn csv_text(text: &str) -> String {
    if text.is_empty() || text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn markdown_cell(cell: &str) -> String {
    cell.replace('|', "\\|").replace('\n', " ")
}

fn json_object(columns: &[String], row: &Row) -> String {
    let fields: Vec<String> = row
        .values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            let name = columns.get(index).map_or_else(|| format!("column{}", index + 1), Clone::clone);
            format!("{}:{}", json_string(&name), json_value(value))
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A value as JSON: NULL is null, numbers are numbers (a non-finite real
/// is a string), text is a string, a blob is its lowercase hex in a string.
pub fn json_value(value: &Value) -> String {
    match &value.kind {
        None => "null".to_owned(),
        Some(value::Kind::Integer(integer)) => integer.to_string(),
        Some(value::Kind::Real(real)) if real.is_finite() => format!("{real:?}"),
        Some(value::Kind::Real(real)) => json_string(&real.to_string()),
        Some(value::Kind::Text(text)) => json_string(text),
        Some(value::Kind::Blob(blob)) => {
            json_string(&blob.iter().map(|byte| format!("{byte:02x}")).collect::<String>())
        }
    }
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// True for the error a closed pipe gives (`deeb query ... | head -1`):
/// the reader has what it wanted, so the program ends quietly with 0.
pub fn is_closed_pipe(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::BrokenPipe
}

#[cfg(test)]
mod tests {
    use super::super::table::{integer, text};
    use super::*;

    fn null() -> Value {
        Value { kind: None }
    }

    fn printed(format: Format, rows: &[Row]) -> String {
        let mut out = Vec::new();
        print_all(&mut out, format, &["id".to_owned(), "name".to_owned()], rows).expect("printed");
        String::from_utf8(out).expect("utf-8")
    }

    fn rows() -> Vec<Row> {
        vec![
            Row { values: vec![integer(1), text("a,b \"q\"")] },
            Row { values: vec![integer(2), null()] },
            Row { values: vec![integer(3), text("")] },
        ]
    }

    #[test]
    fn csv_quotes_and_tells_null_from_empty_text() {
        assert_eq!(printed(Format::Csv, &rows()), "id,name\n1,\"a,b \"\"q\"\"\"\n2,\n3,\"\"\n");
    }

    #[test]
    fn json_and_ndjson_are_exact() {
        let json = "[{\"id\":1,\"name\":\"a,b \\\"q\\\"\"},\n{\"id\":2,\"name\":null},\n{\"id\":3,\"name\":\"\"}\n]\n";
        assert_eq!(printed(Format::Json, &rows()), json);
        assert_eq!(printed(Format::Json, &[]), "[]\n");
        let ndjson = "{\"id\":1,\"name\":\"a,b \\\"q\\\"\"}\n{\"id\":2,\"name\":null}\n{\"id\":3,\"name\":\"\"}\n";
        assert_eq!(printed(Format::Ndjson, &rows()), ndjson);
    }

    #[test]
    fn json_values() {
        assert_eq!(json_value(&Value { kind: Some(value::Kind::Real(0.5)) }), "0.5");
        assert_eq!(json_value(&Value { kind: Some(value::Kind::Real(2.0)) }), "2.0");
        assert_eq!(json_value(&Value { kind: Some(value::Kind::Blob(vec![0xab, 1])) }), "\"ab01\"");
        assert_eq!(json_string("\u{1}\t"), "\"\\u0001\\t\"");
    }

    #[test]
    fn table_line_and_markdown() {
        assert_eq!(
            printed(Format::Table, &rows()),
            " id | name\n----+---------\n 1  | a,b \"q\"\n 2  | NULL\n 3  |\n(3 rows)\n"
        );
        assert_eq!(printed(Format::Line, &rows()[..2]), "  id = 1\nname = a,b \"q\"\n\n  id = 2\nname = NULL\n");
        assert_eq!(printed(Format::Markdown, &rows()[1..2]), "| id | name |\n|---|---|\n| 2 | NULL |\n");
    }

    /// Past the sizing rows the table streams: a later, wider cell does not
    /// change the widths already printed.
    #[test]
    fn table_streams_after_its_sizing_rows() {
        let mut out = Vec::new();
        let mut printer = Printer::new(&mut out, Format::Table, true, "NULL", vec!["x".to_owned()]);
        for _ in 0..TABLE_SIZING_ROWS {
            printer.row(&Row { values: vec![integer(1)] }).expect("row");
        }
        printer.row(&Row { values: vec![text("wide")] }).expect("row");
        printer.finish().expect("finish");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with(" x\n---\n 1\n"), "{}", &text[..20]);
        assert!(text.ends_with(" wide\n(1001 rows)\n"), "{}", &text[text.len() - 30..]);
    }
}
