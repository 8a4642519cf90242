//! Aligned text columns for the CLI's tables (`services`, `instances`, `txn`, `traces`).

/// Lays out `header` and `rows` in columns two spaces apart, the last column unpadded, one
/// line each.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                // Width counts characters, as the widths above do.
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Prints rows as aligned columns.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", columns(header, rows));
}

#[cfg(test)]
mod tests {
    use super::columns;

    #[test]
    fn cells_align_by_characters_and_the_last_column_is_not_padded() {
        let rows = vec![
            vec!["é".to_owned(), "x".to_owned()],
            vec!["abc".to_owned(), "yz".to_owned()],
        ];
        assert_eq!(columns(&["A", "B"], &rows), "A    B\né    x\nabc  yz\n");
    }
}
