// pgjdbc logins: prints one line per JDBC URL tried, "ok <current_user>"
// or "error <SQLSTATE> <message>".
// Usage: java -cp postgresql.jar Credentials.java USER PASSWORD URL...
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.Properties;

public class Credentials {
    public static void main(String[] args) {
        Properties props = new Properties();
        props.setProperty("user", args[0]);
        props.setProperty("password", args[1]);
        props.setProperty("connectTimeout", "10");
        for (int i = 2; i < args.length; i++) {
            try (Connection conn = DriverManager.getConnection(args[i], props);
                 ResultSet rs = conn.createStatement().executeQuery("SELECT current_user")) {
                rs.next();
                System.out.println("ok " + rs.getString(1));
            } catch (SQLException e) {
                System.out.println("error " + e.getSQLState() + " " + e.getMessage().replace('\n', ' '));
            }
        }
    }
}
