import com.alipay.lookout.api.Counter;
import com.alipay.lookout.api.DistributionSummary;
import com.alipay.lookout.api.Id;
import com.alipay.lookout.api.PRIORITY;
import com.alipay.lookout.api.Registry;
import com.alipay.lookout.api.Timer;
import com.alipay.lookout.api.composite.MixinMetric;
import com.alipay.lookout.client.DefaultLookoutClient;
import com.alipay.lookout.core.config.LookoutConfig;
import com.alipay.lookout.remote.step.LookoutRegistry;
import java.util.concurrent.TimeUnit;

/**
 * Pushes a counter, a timer, a gauge, a distribution summary and a mixin with the real
 * SOFALookout client to the gateway on 127.0.0.1:7200 (the port the client hard-codes), the
 * same amounts in each of several steps, then prints the step length and the steps it recorded
 * in (their start, unix ms) as JSON.
 *
 * Usage: LookoutPush APP SNAPPY_THRESHOLD STEPS
 */
public class LookoutPush {
    static final long STEP = 2000;

    static void sleepUntil(long t) throws InterruptedException {
        long now;
        while ((now = System.currentTimeMillis()) < t) {
            Thread.sleep(Math.min(50, t - now));
        }
    }

    public static void main(String[] args) throws Exception {
        String app = args[0];
        int threshold = Integer.parseInt(args[1]);
        int steps = Integer.parseInt(args[2]);

        LookoutConfig config = new LookoutConfig();
        config.setProperty(LookoutConfig.APP_NAME, app);
        config.setProperty("lookout.agent.host.address", "127.0.0.1");
        config.setProperty("lookout.report.compression.threshhold", threshold);
        config.setProperty("lookout.autopoll.os.metric.ignore", true);
        config.setProperty("lookout.autopoll.info.metric.ignore", true);
        config.setStepInterval(PRIORITY.HIGH, 1000);
        config.setStepInterval(PRIORITY.NORMAL, STEP);
        config.setStepInterval(PRIORITY.LOW, 3000);
        LookoutRegistry registry = new LookoutRegistry(config);
        DefaultLookoutClient client = new DefaultLookoutClient(app);
        client.addRegistry(registry);
        Registry r = client.getRegistry();

        Counter orders = r.counter(r.createId("orders").withTag("region", "eu"));
        Timer rpc = r.timer(r.createId("rpc.call").withTag("method", "pay"));
        DistributionSummary payload = r.distributionSummary(r.createId("payload.size"));
        r.gauge(r.createId("queue.size"), () -> 7);
        MixinMetric pool = r.mixinMetric(r.createId("pool").withTag("name", "db"));
        Counter taken = pool.counter("taken");
        pool.gauge("idle", () -> 4);
        // Many series, so that a batch passes the snappy threshold when asked to.
        Counter[] many = new Counter[150];
        for (int i = 0; i < many.length; i++) {
            many[i] = r.counter(r.createId("shard.requests").withTag("shard", Integer.toString(i)));
        }

        StringBuilder recorded = new StringBuilder();
        // Record just after step boundaries, so each step holds exactly one round.
        long start = (System.currentTimeMillis() / STEP + 1) * STEP;
        for (int s = 0; s < steps; s++) {
            long stepStart = start + s * STEP;
            sleepUntil(stepStart + 300);
            orders.inc(3);
            rpc.record(100, TimeUnit.MILLISECONDS);
            rpc.record(300, TimeUnit.MILLISECONDS);
            payload.record(10);
            payload.record(30);
            taken.inc(2);
            for (Counter c : many) {
                c.inc();
            }
            recorded.append(s == 0 ? "" : ",").append(stepStart);
        }
        // The last step is reported once it is over; give the reporter two more steps.
        sleepUntil(start + (steps + 2) * STEP + 500);
        System.out.println("{\"step\":" + STEP + ",\"steps\":[" + recorded + "]}");
        System.exit(0);
    }
}
