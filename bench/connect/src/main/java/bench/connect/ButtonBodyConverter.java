package bench.connect;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.File;
import java.io.IOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.RoundingMode;
import java.nio.ByteBuffer;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.List;
import java.util.Map;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.storage.Converter;

/**
 * A value converter for the bench's Kafka Connect peer: a plain (schemaless) Avro
 * CommerceEvent in, Button's create body out, as a JSON string that the HTTP sink posts as is.
 *
 * <p>What a Connect user writes for this topic: no converter on Maven Central reads plain Avro
 * without a schema registry, and no built-in transform turns decimals into cents. It builds the
 * same body as bench/forward_body.py (a purchase in one currency with two decimals; no
 * attribution, no profile). Config: {@code schema.path}, the .avsc file. A record that is not a
 * purchase becomes a null value.
 */
public final class ButtonBodyConverter implements Converter {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final DateTimeFormatter SECONDS =
      DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss'Z'").withZone(ZoneOffset.UTC);
  private static final BigDecimal HUNDRED = BigDecimal.valueOf(100);

  private GenericDatumReader<GenericRecord> reader;
  private BinaryDecoder decoder;

  @Override
  public void configure(Map<String, ?> configs, boolean isKey) {
    Object path = configs.get("schema.path");
    if (path == null) {
      throw new DataException("ButtonBodyConverter needs schema.path (the .avsc file)");
    }
    try {
      reader = new GenericDatumReader<>(new Schema.Parser().parse(new File(path.toString())));
    } catch (IOException e) {
      throw new DataException("cannot read the schema " + path, e);
    }
  }

  @Override
  public byte[] fromConnectData(String topic, org.apache.kafka.connect.data.Schema schema, Object value) {
    throw new DataException("ButtonBodyConverter only reads");
  }

  @Override
  public SchemaAndValue toConnectData(String topic, byte[] value) {
    if (value == null) {
      return SchemaAndValue.NULL;
    }
    try {
      decoder = DecoderFactory.get().binaryDecoder(value, decoder);
      ObjectNode body = body(reader.read(null, decoder));
      String text = body == null ? null : JSON.writeValueAsString(body);
      return new SchemaAndValue(org.apache.kafka.connect.data.Schema.OPTIONAL_STRING_SCHEMA, text);
    } catch (IOException e) {
      throw new DataException("not a CommerceEvent", e);
    }
  }

  private static int cents(Object decimal) {
    if (decimal == null) {
      return 0;
    }
    ByteBuffer bytes = ((ByteBuffer) decimal).duplicate();
    byte[] raw = new byte[bytes.remaining()];
    bytes.get(raw);
    return new BigDecimal(new BigInteger(raw), 6)
        .multiply(HUNDRED)
        .setScale(0, RoundingMode.DOWN)
        .intValueExact();
  }

  private static String text(Object value) {
    return value == null ? null : value.toString();
  }

  static ObjectNode body(GenericRecord event) {
    GenericRecord commerce = (GenericRecord) event.get("commerce");
    if (!"PURCHASE".equals(text(event.get("event_type"))) || commerce == null) {
      return null;
    }
    ObjectNode body = JSON.createObjectNode();
    body.put("order_id", text(commerce.get("transaction_id")));
    body.put(
        "total",
        cents(commerce.get("total_amount"))
            - cents(commerce.get("tax_amount"))
            - cents(commerce.get("shipping_amount")));
    body.put("currency", text(commerce.get("currency_code")));
    body.put("purchase_date", SECONDS.format(Instant.ofEpochMilli((Long) event.get("event_time"))));
    ArrayNode lines = body.putArray("line_items");
    for (Object item : (List<?>) commerce.get("products")) {
      GenericRecord product = (GenericRecord) item;
      int amount = cents(product.get("price"));
      int quantity = (Integer) product.get("quantity");
      ObjectNode line = lines.addObject();
      line.put("identifier", text(product.get("id")));
      line.put("sku", text(product.get("sku")));
      line.put("description", text(product.get("name")));
      line.putArray("category").add(text(product.get("category")));
      line.put("quantity", quantity);
      line.put("amount", amount);
      line.put("total", amount * quantity);
    }
    GenericRecord identities = (GenericRecord) event.get("user_identities");
    String customer = identities == null ? null : text(identities.get("customer_id"));
    if (customer != null && !customer.isEmpty()) {
      body.putObject("customer").put("id", customer);
    }
    return body;
  }
}
