//! The report: notes on the setup, then one row per figure.

/// Rows of the report: (section, what, value, baseline ratio note).
#[derive(Debug, Default)]
pub struct Report {
    header: Vec<String>,
    rows: Vec<[String; 4]>,
}

impl Report {
    pub fn note(&mut self, line: String) {
        eprintln!("{line}");
        self.header.push(line);
    }

    pub fn row(&mut self, section: &str, what: &str, value: String, ratio: String) {
        eprintln!("{section:<22} {what:<44} {value:>14} {ratio}");
        self.rows.push([section.into(), what.into(), value, ratio]);
    }

    pub fn render(&self) -> String {
        let mut out = String::from("# pgdog data-sync benchmark\n\n");
        for h in &self.header {
            out.push_str(&format!("- {h}\n"));
        }
        out.push_str("\n| section | what | median | vs baseline |\n|-|-|-:|-|\n");
        for r in &self.rows {
            out.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[3]));
        }
        out
    }
}
