//! Columns as kubectl aligns them: Go's text/tabwriter (left-aligned, space
//! padding), which kubectl uses for `get` (min width 6, padding 3) and for
//! `describe` (min width 0, padding 2).
//!
//! A cell is text ended by a tab; the text after a line's last tab is not a
//! cell and is never padded. A column's width is set per block: the run of
//! consecutive lines that have a cell in that column, so a line without one
//! (`IPs:` in `describe pod`) starts new alignments below it.

/// `kubectl get`'s table writer.
pub fn get_table(text: &str) -> String {
    tabwrite(text, 6, 3)
}

/// `kubectl describe`'s writer.
pub fn describe(text: &str) -> String {
    tabwrite(text, 0, 2)
}

/// Aligns the tab-ended cells of `text` as Go's tabwriter does with
/// `minwidth` and `padding`.
pub fn tabwrite(text: &str, minwidth: usize, padding: usize) -> String {
    let lines: Vec<Vec<&str>> = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .map(|line| line.split('\t').collect())
        .collect();
    let mut writer = Writer {
        lines: &lines,
        widths: Vec::new(),
        minwidth,
        padding,
        out: String::new(),
    };
    writer.format(0, lines.len());
    writer.out
}

struct Writer<'a> {
    lines: &'a [Vec<&'a str>],
    /// Widths of the columns of the block being written, left to right.
    widths: Vec<usize>,
    minwidth: usize,
    padding: usize,
    out: String,
}

fn width(cell: &str) -> usize {
    cell.chars().count()
}

impl Writer<'_> {
    /// Writes lines `first..end`, whose columns left of `self.widths.len()`
    /// are sized already.
    fn format(&mut self, first: usize, end: usize) {
        let column = self.widths.len();
        let mut line0 = first;
        let mut this = first;
        while this < end {
            // Cells ended by a tab: all but the line's last piece.
            if column + 1 >= self.lines[this].len() {
                this += 1;
                continue;
            }
            self.write_lines(line0, this);
            line0 = this;
            let mut column_width = self.minwidth;
            while this < end && column + 1 < self.lines[this].len() {
                column_width = column_width.max(width(self.lines[this][column]) + self.padding);
                this += 1;
            }
            self.widths.push(column_width);
            self.format(line0, this);
            self.widths.pop();
            line0 = this;
        }
        self.write_lines(line0, end);
    }

    fn write_lines(&mut self, first: usize, end: usize) {
        for line in &self.lines[first..end] {
            for (index, cell) in line.iter().enumerate() {
                self.out.push_str(cell);
                if let Some(column_width) = self.widths.get(index)
                    && index + 1 < line.len()
                {
                    let pad = column_width.saturating_sub(width(cell));
                    self.out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            self.out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_is_as_wide_as_its_widest_cell_plus_padding() {
        let text = "NAME\tREADY\tAGE\nweb-1\t1/1\t5s\n";
        assert_eq!(get_table(text), "NAME    READY   AGE\nweb-1   1/1     5s\n");
    }

    #[test]
    fn a_narrow_column_gets_the_minimum_width() {
        assert_eq!(get_table("A\tB\nx\ty\n"), "A     B\nx     y\n");
    }

    #[test]
    fn a_line_without_a_cell_ends_the_alignment_block() {
        // As in `describe pod`: "IPs:" ends Name's block; "  IP:" and
        // "Controlled By:" align together below it.
        let text = "Name:\tweb\nIPs:\n  IP:\t198.18.1.10\nControlled By:\tReplicaSet/web\n";
        assert_eq!(
            describe(text),
            "Name:  web\nIPs:\n  IP:           198.18.1.10\nControlled By:  ReplicaSet/web\n"
        );
    }

    #[test]
    fn inner_columns_align_only_over_their_own_block() {
        let text = "Port:\thttp\t80/TCP\nTargetPort:\thttp/TCP\nNodePort:\thttp\t30080/TCP\n";
        assert_eq!(
            describe(text),
            "Port:        http  80/TCP\nTargetPort:  http/TCP\nNodePort:    http  30080/TCP\n"
        );
    }
}
