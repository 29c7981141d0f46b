// pgjdbc compatibility checks; prints one "check: result" line each, the
// same against PostgreSQL and sluice.
// Usage: java -cp postgresql.jar Compat.java URL USER CREATE_STATEMENT
import java.io.StringReader;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.postgresql.PGConnection;

public class Compat {
    interface Check { Object run() throws Exception; }

    static void check(String name, Check c) {
        try {
            System.out.println(name + ": " + c.run());
        } catch (Exception e) {
            String state = e instanceof java.sql.SQLException ? ((java.sql.SQLException) e).getSQLState() : "";
            System.out.println(name + ": FAILED " + state + " " + String.valueOf(e.getMessage()).split("\n")[0]);
        }
    }

    public static void main(String[] args) throws Exception {
        Connection conn = DriverManager.getConnection(args[0], args[1], "");
        conn.createStatement().execute(args[2]);
        check("prepared_x10", () -> {
            List<Integer> counts = new ArrayList<>();
            try (PreparedStatement ps = conn.prepareStatement("INSERT INTO jv (id, name) VALUES (?, ?)")) {
                for (int i = 0; i < 10; i++) {  // named server statements from the 5th on
                    ps.setLong(1, i);
                    ps.setString(2, "p" + i);
                    counts.add(ps.executeUpdate());
                }
            }
            return counts;
        });
        check("execute_batch", () -> {
            try (PreparedStatement ps = conn.prepareStatement("INSERT INTO jv (id, name) VALUES (?, ?)")) {
                for (int i = 20; i < 23; i++) {
                    ps.setLong(1, i);
                    ps.setString(2, "b");
                    ps.addBatch();
                }
                return Arrays.toString(ps.executeBatch());
            }
        });
        check("count", () -> {
            try (ResultSet rs = conn.createStatement().executeQuery("SELECT count(*) FROM jv")) {
                rs.next();
                return rs.getLong(1);
            }
        });
        check("fetch_size_cursor", () -> {
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.setFetchSize(4);
                long sum = 0;
                int rows = 0;
                try (ResultSet rs = st.executeQuery("SELECT id FROM jv ORDER BY id")) {
                    while (rs.next()) { sum += rs.getLong(1); rows++; }
                }
                return rows + " rows, sum " + sum;
            } finally {
                conn.commit();
                conn.setAutoCommit(true);
            }
        });
        check("metadata_tables", () -> {
            DatabaseMetaData md = conn.getMetaData();
            try (ResultSet rs = md.getTables(null, null, "jv", new String[] {"TABLE"})) {
                List<String> names = new ArrayList<>();
                while (rs.next()) names.add(rs.getString("TABLE_NAME"));
                return names;
            }
        });
        check("metadata_columns", () -> {
            DatabaseMetaData md = conn.getMetaData();
            try (ResultSet rs = md.getColumns(null, null, "jv", null)) {
                List<String> cols = new ArrayList<>();
                while (rs.next()) cols.add(rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME"));
                return cols;
            }
        });
        check("copy_manager", () -> {
            long n = ((PGConnection) conn).getCopyAPI()
                .copyIn("COPY jv (id, name) FROM STDIN (FORMAT csv)", new StringReader("30,c\n31,d\n"));
            return n;
        });
        conn.close();
    }
}
